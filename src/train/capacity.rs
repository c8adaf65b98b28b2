//! Whether a training run fits its device, checked before anything is allocated: the
//! model's weights and optimizer state, its activations, and its largest single tensor,
//! against what the device offers. The estimate is a lower bound (what certainly must be
//! held), so a refusal is never a false alarm; a run it lets through may still be tight.

use crate::error::{MobaError, Result};
use crate::model::{LmConfig, VOCAB_SIZE};

use super::config::TrainConfig;

/// What a device can hold, where it is known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceCapacity {
    /// Memory the run may use, and what that memory is (for the error).
    pub memory: Option<(u64, &'static str)>,
    /// The largest single buffer the device allocates, and the limit's name.
    pub largest_buffer: Option<(u64, &'static str)>,
}

impl DeviceCapacity {
    /// The host's available memory (CPU backends, and CPU adapters such as lavapipe).
    pub fn host() -> Self {
        Self {
            memory: crate::memory::host_available_bytes()
                .map(|bytes| (bytes, "the host's available memory")),
            largest_buffer: None,
        }
    }
}

/// Parameters of `model`, counted from its config (weights are not allocated).
pub fn parameter_count(model: &LmConfig) -> Option<u64> {
    let d = model.d_model as u64;
    let kv = (model.n_kv_heads * (model.d_model / model.n_heads.max(1))) as u64;
    let ff = model.d_ff as u64;
    // q and o (d x d), k and v (d x kv), the SwiGLU's three matrices (d x d_ff).
    let layer = d
        .checked_mul(d)?
        .checked_mul(2)?
        .checked_add(d.checked_mul(kv)?.checked_mul(2)?)?
        .checked_add(d.checked_mul(ff)?.checked_mul(3)?)?;
    let embeddings = d.checked_mul(2 * VOCAB_SIZE as u64)?;
    layer
        .checked_mul(model.n_layers as u64)?
        .checked_add(embeddings)
}

/// A lower bound of the bytes one training step holds: f32 weights, gradients and AdamW's
/// two moments (16 bytes a parameter), and the activations kept for the backward (per
/// token and layer the block's input, attention output and the SwiGLU's hidden values; per
/// token the logits).
pub fn training_bytes(config: &TrainConfig) -> Option<u64> {
    let model = &config.model;
    let tokens = (config.batch_size as u64).checked_mul(config.seq_len as u64)?;
    let per_token_layer = 4 * model.d_model as u64 + 2 * model.d_ff as u64;
    let per_token = per_token_layer
        .checked_mul(model.n_layers as u64)?
        .checked_add(3 * VOCAB_SIZE as u64)?;
    let activations = tokens.checked_mul(per_token)?.checked_mul(4)?;
    parameter_count(model)?
        .checked_mul(16)?
        .checked_add(activations)
}

/// The largest single tensor of a training step: the logits, the SwiGLU's hidden values, or
/// a feed-forward weight.
pub fn largest_tensor_bytes(config: &TrainConfig) -> Option<u64> {
    let model = &config.model;
    let tokens = (config.batch_size as u64).checked_mul(config.seq_len as u64)?;
    let widest = model.d_ff.max(VOCAB_SIZE).max(model.d_model) as u64;
    let activation = tokens.checked_mul(widest)?.checked_mul(4)?;
    let weight = (model.d_model as u64)
        .checked_mul(model.d_ff as u64)?
        .checked_mul(4)?;
    Some(activation.max(weight))
}

/// Fails with the estimate and the limit when `config` cannot fit `capacity`.
pub fn check_capacity(config: &TrainConfig, capacity: &DeviceCapacity) -> Result<()> {
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    let sizes = "--d-model, --layers, --d-ff, --batch-size or --seq-len";
    let Some(needed) = training_bytes(config) else {
        return Err(MobaError::Config(format!(
            "this model and batch need more bytes than a 64-bit size holds: lower {sizes}"
        )));
    };
    if let Some((available, what)) = &capacity.memory
        && needed > *available
    {
        return Err(MobaError::Config(format!(
            "training this model needs at least {:.2} GiB ({} parameters with their \
                 gradients and AdamW state, and the activations of {} x {} bytes), but {what} \
                 is {:.2} GiB: lower {sizes}",
            gib(needed),
            parameter_count(&config.model).unwrap_or(0),
            config.batch_size,
            config.seq_len,
            gib(*available)
        )));
    }
    if let (Some(largest), Some((limit, what))) =
        (largest_tensor_bytes(config), &capacity.largest_buffer)
        && largest > *limit
    {
        return Err(MobaError::limit(
            format!(
                "the largest tensor of a training step ({:.2} GiB)",
                gib(largest)
            ),
            what,
            largest,
            *limit,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::DataConfig;

    fn config(d_model: usize, batch_size: usize) -> TrainConfig {
        let model = LmConfig {
            d_model,
            ..LmConfig::preset("tiny").unwrap()
        };
        TrainConfig::new(
            model,
            DataConfig::Recall {
                pairs: 4,
                queries: 1,
            },
            256,
            10,
        )
        .with_batch_size(batch_size)
    }

    #[test]
    fn the_tiny_preset_is_counted_exactly() {
        let model = LmConfig::preset("tiny").unwrap();
        let d = 64u64;
        // 2 layers of q, o (64 x 64), k, v (64 x 32) and 3 x (64 x 176), and two 256 x 64 tables.
        let want = 2 * (2 * d * d + 2 * d * 32 + 3 * d * 176) + 2 * 256 * d;
        assert_eq!(parameter_count(&model), Some(want));
    }

    #[test]
    fn a_model_larger_than_memory_is_refused_with_both_sizes() {
        let capacity = DeviceCapacity {
            memory: Some((8 << 30, "the host's available memory")),
            largest_buffer: Some((1 << 30, "max_storage_buffer_binding_size")),
        };
        assert!(check_capacity(&config(64, 1), &capacity).is_ok());
        let error = check_capacity(&config(65536, 1), &capacity)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("the host's available memory is 8.00 GiB"),
            "{error}"
        );
        let error = check_capacity(&config(64, 1_000_000_000), &capacity)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--batch-size"), "{error}");
        // A wide batch within memory but over the largest buffer.
        let roomy = DeviceCapacity {
            memory: None,
            ..capacity
        };
        let error = check_capacity(&config(64, 20_000), &roomy)
            .unwrap_err()
            .to_string();
        assert!(error.contains("max_storage_buffer_binding_size"), "{error}");
    }
}
