//! The browser demo (`web/`) in Debian's Chromium with SwiftShader WebGPU: `web/test.sh`
//! builds it for wasm32, runs the wasm-bindgen tests of its wasm API and the playwright-core
//! test of the page. `scripts/setup.sh` (run by `scripts/test.sh`, the README's test command)
//! installs what that needs (chromium, chromium-driver, the wasm32 target, wasm-bindgen-cli,
//! `npm ci` in web/); a missing piece fails with its name and that command.

use std::process::Command;

#[test]
fn the_browser_demo_passes_its_tests_in_chromium() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/web/test.sh");
    let output = Command::new(script)
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    // Shown by the test harness when the test fails.
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "web/test.sh failed: see its output above"
    );
}
