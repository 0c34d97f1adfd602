//! The one place the engine asks which instructions this CPU has; each kernel checks here
//! before it runs and falls back to candle's operations where its instructions are missing.

/// AVX-512F: the f32 tile products ([`super::fblock`]) and the row decoders
/// ([`super::qrows`]).
pub(in crate::model) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX2, FMA and F16C: the quantized decode kernels ([`super::qgemv`]).
pub(in crate::model) fn avx2_fma_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
