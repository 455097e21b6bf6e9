//! Picks the tensor device: burn's flex CPU backend, wgpu (probing for an adapter first:
//! burn-wgpu panics on a worker thread when none exists) or, when built with the `tch` feature,
//! libtorch on the CPU.

use burn::tensor::{Device, DeviceKind};

use crate::config::BackendChoice;
use crate::error::{Error, Result};

/// The padding multiple on cubecl devices (see `pad_multiple`).
pub const CUBECL_PAD_MULTIPLE: usize = 16;

/// Padded batch lengths on `device` are multiples of this. burn's cubecl backends (wgpu; the
/// devices that report an identity) compile and autotune kernels per tensor shape: with one
/// shape per sentence length, a full SST-2 fine-tune on an H100 ran at a quarter of the
/// fixed-shape rate of `cargo bench --bench slm_throughput`. Sixteen leaves at most eight lengths
/// at max_len 128. Eager CPU backends pad to the longest row: there padding is only extra work.
pub fn pad_multiple(device: &Device) -> usize {
    if device.identity().is_some() {
        CUBECL_PAD_MULTIPLE
    } else {
        1
    }
}

/// Turns off Mesa's Vulkan device-select layer on a machine with no desktop session, so that
/// probing for an adapter does not print libwayland's "error: XDG_RUNTIME_DIR is invalid or not
/// set" twice per run. The layer only orders adapters by the session's display, which such a
/// machine does not have; a user's `NODEVICE_SELECT` or `MESA_VK_DEVICE_SELECT` is left alone.
///
/// # Safety
/// It sets an environment variable: no other thread may be running.
pub unsafe fn quiet_headless_vulkan() {
    let has_session = std::env::var_os("XDG_RUNTIME_DIR")
        .is_some_and(|dir| std::path::Path::new(&dir).is_absolute());
    let user_chose = ["NODEVICE_SELECT", "MESA_VK_DEVICE_SELECT"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if !has_session && !user_chose {
        // SAFETY: the caller guarantees that no other thread reads the environment meanwhile.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

/// The adapter burn's default wgpu device opens (a high-performance request: a discrete GPU
/// before an integrated one, software Vulkan such as lavapipe last), if any exists.
fn best_adapter() -> Option<wgpu::AdapterInfo> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters =
        futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters
        .iter()
        .map(wgpu::Adapter::get_info)
        .min_by_key(|info| preference(info.device_type))
}

/// Rank of an adapter type in a high-performance request (lower first).
fn preference(kind: wgpu::DeviceType) -> u8 {
    match kind {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::Other => 2,
        wgpu::DeviceType::VirtualGpu => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

/// Name of the wgpu adapter burn would use, if any (software Vulkan such as lavapipe counts).
pub fn wgpu_adapter() -> Option<String> {
    best_adapter().as_ref().map(describe)
}

/// The device for a backend choice and a description of it for logs and records.
pub fn select(choice: BackendChoice) -> Result<(Device, String)> {
    // The fused kernels only ever run on flex, so every other choice may leave them on.
    super::fused::set_enabled(choice != BackendChoice::CpuUnfused);
    let on_flex = || {
        let name = format!("cpu (burn flex, fused kernels, {})", cpu_vector_isa());
        (Device::flex(), name)
    };
    let on_wgpu = |info: &wgpu::AdapterInfo| {
        (
            Device::wgpu(DeviceKind::DefaultDevice),
            format!("wgpu: {}", describe(info)),
        )
    };
    match choice {
        BackendChoice::Cpu => Ok(on_flex()),
        BackendChoice::CpuUnfused => Ok((
            Device::flex(),
            format!("cpu (burn flex, {})", cpu_vector_isa()),
        )),
        BackendChoice::Wgpu => {
            best_adapter()
                .map(|info| on_wgpu(&info))
                .ok_or_else(|| Error::Config {
                    location: "--backend / run.backend".into(),
                    key: "run.backend".into(),
                    message: "wgpu was asked for but no adapter exists; install GPU drivers (or \
                          `apt-get install mesa-vulkan-drivers libvulkan1` for software Vulkan), \
                          or use --backend cpu"
                        .into(),
                })
        }
        BackendChoice::Libtorch => libtorch(),
        BackendChoice::Auto => match best_adapter() {
            // Software Vulkan is ~15x slower than flex: auto only picks a real GPU.
            Some(info) if info.device_type != wgpu::DeviceType::Cpu => Ok(on_wgpu(&info)),
            _ => Ok(on_flex()),
        },
    }
}

/// The vector instructions the CPU kernels pick at run time on this machine: gemm's AVX-512
/// kernels where the CPU has AVX-512F, its AVX2/FMA ones otherwise (the fused kernels' own
/// loops are AVX2/FMA on both). The same cell trained with different ones sums in another order
/// and can end on other digits, so the record names them.
pub fn cpu_vector_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "x86-64 AVX-512"
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            "x86-64 AVX2"
        } else {
            "x86-64 without AVX2"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}

/// libtorch's CPU kernels under burn's autodiff; burn 0.22 deprecates its tch backend, but on a
/// CPU it trains 1.4-2x faster than flex (BENCHMARKS.md).
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn libtorch() -> Result<(Device, String)> {
    Ok((Device::libtorch(), "cpu (burn tch, libtorch)".into()))
}

#[cfg(not(feature = "tch"))]
fn libtorch() -> Result<(Device, String)> {
    Err(Error::Config {
        location: "--backend / run.backend".into(),
        key: "run.backend".into(),
        message: "libtorch was asked for but this build has no libtorch backend; run \
                  `scripts/fetch-libtorch.sh` and build with the command it prints \
                  (`--features tch`), or use --backend cpu"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_is_preferred_to_software_vulkan() {
        use wgpu::DeviceType::{Cpu, DiscreteGpu, IntegratedGpu, Other, VirtualGpu};
        let mut kinds = [Cpu, VirtualGpu, IntegratedGpu, Other, DiscreteGpu];
        kinds.sort_by_key(|&k| preference(k));
        assert_eq!(kinds, [DiscreteGpu, IntegratedGpu, Other, VirtualGpu, Cpu]);
    }

    /// The kernels' run-time choice agrees with the flags the Linux kernel lists for the CPU.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn the_vector_isa_matches_the_cpu_flags() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|line| line.starts_with("flags"))
            .and_then(|line| line.split_once(':'))
            .map(|(_, flags)| flags.split_whitespace().collect())
            .unwrap();
        let has = |flag: &str| flags.contains(&flag);
        let expected = if has("avx512f") {
            "x86-64 AVX-512"
        } else if has("avx2") && has("fma") {
            "x86-64 AVX2"
        } else {
            "x86-64 without AVX2"
        };
        assert_eq!(cpu_vector_isa(), expected);
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn libtorch_without_the_feature_names_the_key_and_the_fix() {
        let message = select(BackendChoice::Libtorch).unwrap_err().to_string();
        assert!(message.contains("run.backend"), "{message}");
        assert!(message.contains("scripts/fetch-libtorch.sh"), "{message}");
        assert!(message.contains("--features tch"), "{message}");
    }
}
