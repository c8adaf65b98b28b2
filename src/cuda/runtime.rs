//! The driver side of the CUDA path: one context per GPU (the primary context, which
//! burn-cuda uses too), NVRTC builds cached per (program, constants) and compiled for the
//! device's compute capability, and launches on a stream of our own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};

use super::cache::{StoredModule, cache_dir, configure_burn_caches};
use super::schedule::{Arg, Launch};
use super::source::{CudaConstants, CudaProgram, MmaKind};
use crate::error::{MobaError, Result};
use crate::kernel_params::KernelParams;

// SAFETY: `KernelParams` is `repr(C)`, plain u32/f32 fields, the layout of `struct Params`.
unsafe impl DeviceRepr for KernelParams {}

/// Shared memory a block gets without opting in.
const DEFAULT_SHARED_BYTES: u32 = 48 * 1024;

/// The CUDA state of one GPU.
pub struct CudaRuntime {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// `sm_XY` of the device.
    arch: &'static str,
    /// Compute capability major version.
    major: u32,
    name: String,
    modules: Mutex<HashMap<(CudaProgram, CudaConstants), Arc<CudaModule>>>,
    /// Where built modules are kept across runs (`None`: no cache folder could be made).
    cache: Option<PathBuf>,
}

fn cuda_error(what: &str, error: impl std::fmt::Debug) -> MobaError {
    MobaError::Cuda(format!("{what}: {error:?}"))
}

impl CudaRuntime {
    /// The runtime of GPU `ordinal`, created on first use. Fails clearly when there is no
    /// driver, no such GPU, or a GPU without bf16 tensor cores (compute capability < 8.0).
    pub fn get(ordinal: usize) -> Result<Arc<CudaRuntime>> {
        static RUNTIMES: OnceLock<Mutex<HashMap<usize, Arc<CudaRuntime>>>> = OnceLock::new();
        let mut runtimes = RUNTIMES.get_or_init(Default::default).lock().unwrap();
        if let Some(runtime) = runtimes.get(&ordinal) {
            return Ok(runtime.clone());
        }
        let runtime = Arc::new(Self::open(ordinal)?);
        runtimes.insert(ordinal, runtime.clone());
        Ok(runtime)
    }

    fn open(ordinal: usize) -> Result<CudaRuntime> {
        // Before burn-cuda's first use: its kernels and autotune results go there too.
        let cache = match cache_dir() {
            Ok(dir) => {
                configure_burn_caches(&dir);
                Some(dir)
            }
            Err(error) => {
                eprintln!("moba: compiled kernels are not kept across runs: {error}");
                None
            }
        };
        // cudarc loads libcuda at run time and panics when it is missing: turn that into
        // an error a user can act on.
        // The default hook would print cudarc's panic before our error: silence it here.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let context = std::panic::catch_unwind(|| CudaContext::new(ordinal));
        std::panic::set_hook(hook);
        let context = context
            .map_err(|_| {
                MobaError::Cuda(
                    "no CUDA driver found (libcuda.so could not be loaded): the CUDA path needs \
                     an NVIDIA GPU and its driver"
                        .into(),
                )
            })?
            .map_err(|e| cuda_error(&format!("opening CUDA device {ordinal}"), e))?;
        let attribute = |a| {
            context
                .attribute(a)
                .map_err(|e| cuda_error("reading the compute capability", e))
        };
        let major = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let name = context.name().unwrap_or_else(|_| "CUDA device".into());
        if major < 8 {
            return Err(MobaError::Unsupported(format!(
                "{name} (compute capability {major}.{minor}): the CUDA path needs 8.0+ \
                 (bf16 tensor-core mma); use the wgpu backend"
            )));
        }
        let stream = context
            .new_stream()
            .map_err(|e| cuda_error("creating a stream", e))?;
        Ok(CudaRuntime {
            context,
            stream,
            // One string per GPU for the life of the process.
            arch: Box::leak(format!("sm_{major}{minor}").into_boxed_str()),
            major: major as u32,
            name: format!("{name} (sm_{major}{minor})"),
            modules: Mutex::default(),
            cache,
        })
    }

    /// The GPU's name and compute capability.
    pub fn describe(&self) -> &str {
        &self.name
    }

    /// The tensor-core instructions this GPU's kernels use at `head_dim`.
    pub fn mma_kind(&self, head_dim: usize) -> MmaKind {
        MmaKind::for_device(self.major, head_dim)
    }

    /// The module of `program` built for `constants`: from memory, else from the cache
    /// folder, else built by NVRTC (~1 s each) and kept there.
    fn module(&self, program: CudaProgram, constants: CudaConstants) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap();
        if let Some(module) = modules.get(&(program, constants)) {
            return Ok(module.clone());
        }
        let target = constants.mma.target(self.arch);
        let source = constants.source(program);
        let stored = self
            .cache
            .as_ref()
            .map(|dir| StoredModule::new(&dir.join("nvrtc"), program.name(), target, &source));
        // A stored module this driver no longer loads (another driver, another NVRTC) is
        // built again and replaced.
        let loaded = stored
            .as_ref()
            .and_then(|stored| stored.load(&source))
            .and_then(|ptx| self.context.load_module(Ptx::from_src(ptx)).ok());
        let module = match loaded {
            Some(module) => module,
            None => {
                let options = CompileOptions {
                    arch: Some(target),
                    name: Some(program.name().into()),
                    ..Default::default()
                };
                let ptx = compile_ptx_with_opts(&source, options)
                    .map_err(|e| cuda_error(&format!("NVRTC compiling {}", program.name()), e))?;
                if let Some(stored) = &stored {
                    // A cache that cannot be written costs the next run a compile, no more.
                    stored.store(&source, &ptx.to_src()).ok();
                }
                self.context
                    .load_module(ptx)
                    .map_err(|e| cuda_error(&format!("loading {}", program.name()), e))?
            }
        };
        modules.insert((program, constants), module.clone());
        Ok(module)
    }

    /// Builds every program for `constants` (NVRTC on first use), so that a compile error
    /// surfaces before a forward runs.
    pub(crate) fn prepare(&self, constants: CudaConstants) -> Result<()> {
        for program in CudaProgram::MOBA {
            self.module(program, constants)?;
        }
        Ok(())
    }

    /// Kernel `name` of `program` built for `constants`, allowed `shared_bytes` of dynamic
    /// shared memory.
    pub(crate) fn kernel(
        &self,
        program: CudaProgram,
        constants: CudaConstants,
        name: &str,
        shared_bytes: u32,
    ) -> Result<CudaFunction> {
        let function = self
            .module(program, constants)?
            .load_function(name)
            .map_err(|e| cuda_error(name, e))?;
        if shared_bytes > DEFAULT_SHARED_BYTES {
            function
                .set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared_bytes as i32,
                )
                .map_err(|e| cuda_error(&format!("{name} shared memory"), e))?;
        }
        Ok(function)
    }

    /// Queues `function` (kernel `name`) on our stream with `args` (as its signature lists
    /// them).
    pub(crate) fn launch_kernel(
        &self,
        name: &str,
        function: &CudaFunction,
        config: LaunchConfig,
        args: &[Arg],
    ) -> Result<()> {
        let mut builder = self.stream.launch_builder(function);
        for arg in args {
            match arg {
                Arg::Params(params) => builder.arg(params),
                Arg::U32(value) => builder.arg(value),
                Arg::F32(value) => builder.arg(value),
                Arg::Ptr(address) => builder.arg(address),
            };
        }
        // SAFETY: the arguments match the kernel's signature (see `super::schedule` and
        // `super::lm_decode`), and every address is a live allocation of the size the kernel
        // indexes (`CudaPlan`, the decoder's buffers).
        unsafe { builder.launch(config) }
            .map(|_| ())
            .map_err(|e| cuda_error(&format!("launching {name}"), e))
    }

    /// Queues one step's kernel on our stream.
    fn launch(&self, launch: &Launch, constants: CudaConstants) -> Result<()> {
        let name = launch.step.name();
        let function = self.kernel(launch.program, constants, name, launch.shared_bytes)?;
        let config = LaunchConfig {
            grid_dim: launch.grid,
            block_dim: (launch.threads, 1, 1),
            shared_mem_bytes: launch.shared_bytes,
        };
        self.launch_kernel(name, &function, config, &launch.args)
    }

    /// Our stream, where every kernel runs: allocations and copies of the decoder go there.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for everything queued on our stream; `what` names it in the error.
    pub(crate) fn synchronize(&self, what: &str) -> Result<()> {
        self.stream.synchronize().map_err(|e| cuda_error(what, e))
    }

    /// Runs `launches` in order and waits for them (a kernel fault is reported here). With
    /// `timed`, returns each launch's GPU milliseconds (CUDA events between launches).
    pub fn execute(
        &self,
        launches: &[Launch],
        constants: CudaConstants,
        timed: bool,
    ) -> Result<Vec<f64>> {
        let profiled = profile_launches();
        let timed = timed || profiled;
        let event = || {
            self.stream
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| cuda_error("recording an event", e))
        };
        let mut events = Vec::new();
        if timed {
            events.push(event()?);
        }
        for launch in launches {
            self.launch(launch, constants)?;
            if timed {
                events.push(event()?);
            }
        }
        self.synchronize("running the MoBA kernels")?;
        let times = events
            .windows(2)
            .map(|pair| {
                pair[0]
                    .elapsed_ms(&pair[1])
                    .map(f64::from)
                    .map_err(|e| cuda_error("reading an event", e))
            })
            .collect::<Result<Vec<f64>>>()?;
        if profiled {
            for (launch, ms) in launches.iter().zip(&times) {
                let (x, y, z) = launch.grid;
                let name = launch.step.name();
                eprintln!(
                    "moba cuda: {name} grid {x}x{y}x{z} x {} threads: {ms:.3} ms",
                    launch.threads
                );
            }
        }
        Ok(times)
    }
}

/// Whether `MOBA_CUDA_PROFILE` asks for each MoBA kernel's GPU time on standard error (one
/// line per launch: kernel, grid, threads, milliseconds), to see where a call's time goes.
pub(crate) fn profile_launches() -> bool {
    static PROFILE: OnceLock<bool> = OnceLock::new();
    *PROFILE.get_or_init(|| std::env::var_os("MOBA_CUDA_PROFILE").is_some_and(|v| v != "0"))
}
