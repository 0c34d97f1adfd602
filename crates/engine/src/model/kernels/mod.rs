//! CPU kernels: quantized and f32 matrix products for prefill and decoding, row decoders, the
//! one CPU-feature check they share, and the allocator setting.

pub(super) mod alloc;
pub(super) mod cpu;
pub(super) mod fblock;
pub(super) mod fgemv;
pub(super) mod qgemm;
pub(super) mod qgemv;
pub(super) mod qrows;
