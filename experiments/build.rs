//! With the `tch` feature, embeds LibTorch's library folder (`$LIBTORCH/lib`) as an rpath
//! in every binary, test and benchmark of the package, so they run without
//! `LD_LIBRARY_PATH`. (torch-sys links LibTorch but gives the final binaries no rpath.)
//! The worker and orchestrator packages use this same script.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TCH").is_some()
        && let Some(root) = std::env::var_os("LIBTORCH")
    {
        let lib = std::path::Path::new(&root).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
