//! Which SIMD kernels this CPU runs, chosen once at run time.
//!
//! The release binary is built for plain x86-64, so the fast kernels are
//! compiled with `#[target_feature]` and picked here with
//! `is_x86_feature_detected!`: a server with AVX-512 gets its AVX-512
//! kernels, an AVX2-only one its AVX2/FMA kernels, anything else the portable
//! scalar code. `TRIAGE_KERNELS=scalar|avx2|avx512` forces a path (for
//! measuring one path on a machine that has a better one); a forced path the
//! CPU lacks falls back to the best one it has, with a warning.

use std::sync::OnceLock;

/// A family of kernels, from slowest to fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelPath {
    /// Portable Rust loops (any CPU).
    Scalar,
    /// 256-bit AVX2 + FMA (+ F16C): f32 FMA micro-kernels, int8 via `vpmaddubsw`.
    Avx2,
    /// 512-bit AVX-512 (F, BW, VL): f32 micro-kernels on zmm, int8 via
    /// `vpdpbusd` when the CPU has AVX-512 VNNI (else the AVX2 int8 kernel).
    Avx512,
}

impl KernelPath {
    /// The name used in `TRIAGE_KERNELS` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
        }
    }

    fn parse(s: &str) -> Option<KernelPath> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "generic" => Some(KernelPath::Scalar),
            "avx2" | "fma" => Some(KernelPath::Avx2),
            "avx512" | "avx-512" => Some(KernelPath::Avx512),
            _ => None,
        }
    }
}

/// What the CPU offers and which kernels were chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// SIMD features relevant to the kernels that this CPU reports.
    pub flags: Vec<&'static str>,
    /// The best path the CPU supports.
    pub best: KernelPath,
    /// The path in use (`best`, or what `TRIAGE_KERNELS` forced).
    pub path: KernelPath,
    /// Whether the int8 kernels use AVX-512 VNNI (`vpdpbusd`).
    pub vnni: bool,
}

impl CpuInfo {
    /// One line for logs and `triage bench embed`, e.g.
    /// `kernels avx2 (best avx2; cpu: avx2 fma f16c)`.
    pub fn summary(&self) -> String {
        format!(
            "kernels {}{} (best {}; cpu: {})",
            self.path.name(),
            if self.vnni { "+vnni" } else { "" },
            self.best.name(),
            if self.flags.is_empty() {
                "no simd extensions used".to_string()
            } else {
                self.flags.join(" ")
            }
        )
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> (Vec<&'static str>, KernelPath, bool) {
    let mut flags = Vec::new();
    macro_rules! probe {
        ($($f:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($f) {
                flags.push($f);
            }
        )*};
    }
    probe!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avxvnni"
    );
    let has = |f: &str| flags.contains(&f);
    let avx2 = has("avx2") && has("fma");
    let avx512 = avx2 && has("avx512f") && has("avx512bw") && has("avx512vl");
    let best = if avx512 {
        KernelPath::Avx512
    } else if avx2 {
        KernelPath::Avx2
    } else {
        KernelPath::Scalar
    };
    let vnni = avx512 && has("avx512vnni");
    (flags, best, vnni)
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> (Vec<&'static str>, KernelPath, bool) {
    (Vec::new(), KernelPath::Scalar, false)
}

/// The path for a CPU whose best is `best`, given a `TRIAGE_KERNELS` value.
fn choose(best: KernelPath, forced: Option<&str>) -> KernelPath {
    match forced.filter(|s| !s.trim().is_empty() && s.trim() != "auto") {
        None => best,
        Some(s) => match KernelPath::parse(s) {
            Some(p) if p <= best => p,
            Some(p) => {
                tracing::warn!(
                    forced = p.name(),
                    best = best.name(),
                    "TRIAGE_KERNELS asks for kernels this CPU lacks; using the best it has"
                );
                best
            }
            None => {
                tracing::warn!(
                    value = s,
                    "unknown TRIAGE_KERNELS value (scalar, avx2, avx512, auto)"
                );
                best
            }
        },
    }
}

/// The CPU's features and the kernel path in use (detected once per process).
pub fn cpu_info() -> &'static CpuInfo {
    static INFO: OnceLock<CpuInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let (flags, best, vnni) = detect();
        let path = choose(best, std::env::var("TRIAGE_KERNELS").ok().as_deref());
        CpuInfo {
            flags,
            best,
            path,
            vnni: vnni && path == KernelPath::Avx512,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forcing_can_only_step_down() {
        use KernelPath::*;
        assert_eq!(choose(Avx2, None), Avx2);
        assert_eq!(choose(Avx2, Some("auto")), Avx2);
        assert_eq!(choose(Avx2, Some("scalar")), Scalar);
        assert_eq!(choose(Avx512, Some("AVX2")), Avx2);
        assert_eq!(choose(Avx2, Some("avx512")), Avx2);
        assert_eq!(choose(Scalar, Some("avx2")), Scalar);
        assert_eq!(choose(Avx2, Some("bogus")), Avx2);
    }

    #[test]
    fn summary_names_the_path_and_flags() {
        let s = cpu_info().summary();
        assert!(s.starts_with("kernels "), "{s}");
        assert!(s.contains(cpu_info().path.name()));
    }
}
