//! The CUDA C sources, embedded at build time and compiled at run time by NVRTC.

/// Helpers every kernel file uses; prepended to each file before compilation.
pub const COMMON: &str = include_str!("../kernels/common.cuh");

/// One kernel file: its name (also the NVRTC program name) and its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFile {
    pub name: &'static str,
    pub source: &'static str,
}

impl KernelFile {
    /// The source NVRTC sees: the common helpers, then the file.
    pub fn full_source(&self) -> String {
        format!("{COMMON}\n#line 1 \"{}.cu\"\n{}", self.name, self.source)
    }
}

pub const LINCOMB: KernelFile = KernelFile {
    name: "lincomb",
    source: include_str!("../kernels/lincomb.cu"),
};
pub const ACTIVATIONS: KernelFile = KernelFile {
    name: "activations",
    source: include_str!("../kernels/activations.cu"),
};
pub const NORM: KernelFile = KernelFile {
    name: "norm",
    source: include_str!("../kernels/norm.cu"),
};
pub const SOFTMAX: KernelFile = KernelFile {
    name: "softmax",
    source: include_str!("../kernels/softmax.cu"),
};
pub const IM2COL: KernelFile = KernelFile {
    name: "im2col",
    source: include_str!("../kernels/im2col.cu"),
};
pub const ADALN: KernelFile = KernelFile {
    name: "adaln",
    source: include_str!("../kernels/adaln.cu"),
};

pub const LAYOUT: KernelFile = KernelFile {
    name: "layout",
    source: include_str!("../kernels/layout.cu"),
};

/// Backward-pass reductions and glue (bias gradients, the gated residual's backward).
pub const GRAD: KernelFile = KernelFile {
    name: "grad",
    source: include_str!("../kernels/grad.cu"),
};

/// The AdamW update.
pub const OPTIM: KernelFile = KernelFile {
    name: "optim",
    source: include_str!("../kernels/optim.cu"),
};

/// Every embedded kernel file.
pub const ALL: [KernelFile; 9] = [
    LINCOMB,
    ACTIVATIONS,
    NORM,
    SOFTMAX,
    IM2COL,
    ADALN,
    LAYOUT,
    GRAD,
    OPTIM,
];

/// Must equal `LINCOMB_MAX_TERMS` in lincomb.cu (checked by a test).
pub const LINCOMB_MAX_TERMS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_terms_matches_the_kernel_source() {
        let needle = format!("#define LINCOMB_MAX_TERMS {LINCOMB_MAX_TERMS}\n");
        assert!(LINCOMB.source.contains(&needle));
    }

    #[test]
    fn every_file_defines_extern_c_kernels() {
        for k in ALL {
            assert!(k.source.contains("extern \"C\" __global__"), "{}", k.name);
        }
    }
}
