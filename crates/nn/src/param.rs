//! Trainable parameters and the visitor that names them.
//!
//! Names are dotted PyTorch module paths (`blocks.0.attn.in_proj_weight`), so a
//! safetensors file written by PyTorch's `state_dict()` loads by name, and the visit order
//! is PyTorch's `named_parameters()` order.

use std::fmt::{Debug, Display};
use std::iter::Sum;

use diffusion_core::Element;
use ndarray::{ArrayD, IxDyn};

/// The element types networks are generic over: `f32` and `f64`.
pub trait Float:
    Element
    + bytemuck::Pod
    + num_traits::Float
    + Sum
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Display
    + Debug
    + Send
    + Sync
    + 'static
{
    /// `x[i] = exp(x[i])` over a slice: the hot loop of every activation and softmax.
    /// f64 keeps the correctly rounded scalar `exp` (it is the reference precision); f32
    /// uses the vectorised version in `vmath` (clamped to finite normal results).
    #[inline]
    fn exp_in_place(x: &mut [Self]) {
        for v in x.iter_mut() {
            *v = num_traits::Float::exp(*v);
        }
    }

    /// `exp(self)` for elementwise loops, with [`Float::exp_in_place`]'s values: f64's
    /// scalar `exp`, f32's branch-free `vmath` polynomial, inlined, so that a loop computing
    /// an activation from it runs at the vector width inside `vmath::wide` in one
    /// pass.
    #[inline(always)]
    fn exp_elem(self) -> Self {
        num_traits::Float::exp(self)
    }
}

impl Float for f32 {
    #[inline]
    fn exp_in_place(x: &mut [f32]) {
        crate::vmath::exp_f32_in_place(x)
    }

    #[inline(always)]
    fn exp_elem(self) -> Self {
        crate::vmath::exp_one(self)
    }
}
impl Float for f64 {}

/// A trainable tensor and its accumulated gradient (same shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Param<A> {
    pub value: ArrayD<A>,
    pub grad: ArrayD<A>,
}

impl<A: Float> Param<A> {
    /// A parameter holding `value`, with a zero gradient.
    pub fn new(value: ArrayD<A>) -> Self {
        let grad = ArrayD::zeros(value.raw_dim());
        Self { value, grad }
    }

    /// A zero-initialised parameter of `shape`.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::new(ArrayD::zeros(IxDyn(shape)))
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(A::zero());
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the parameter holds no scalars.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// The value as a contiguous slice (parameters are always in standard layout).
    pub(crate) fn v(&self) -> &[A] {
        self.value
            .as_slice()
            .expect("parameters are kept in standard layout")
    }

    /// The gradient as a contiguous mutable slice.
    pub(crate) fn g(&mut self) -> &mut [A] {
        self.grad
            .as_slice_mut()
            .expect("parameters are kept in standard layout")
    }
}

/// Visits parameters by dotted names that equal PyTorch module paths / safetensors keys
/// (e.g. `"blocks.0.attn.in_proj_weight"`), always in the same order.
pub trait Parameters<A> {
    /// Every trainable parameter, in PyTorch `named_parameters()` order.
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>));
    /// Same order as [`Parameters::visit`], mutable.
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>));

    /// Non-trainable state saved with the model (PyTorch buffers and `requires_grad=False`
    /// parameters, e.g. DiT's positional embedding `pos`). None by default.
    fn visit_buffers(&self, _f: &mut dyn FnMut(&str, &ArrayD<A>)) {}
    /// Same order as [`Parameters::visit_buffers`], mutable.
    fn visit_buffers_mut(&mut self, _f: &mut dyn FnMut(&str, &mut ArrayD<A>)) {}

    /// Sets every gradient to zero.
    fn zero_grad(&mut self)
    where
        A: Float,
    {
        self.visit_mut(&mut |_, p| p.zero_grad());
    }

    /// Number of trainable scalars.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit(&mut |_, p| n += p.value.len());
        n
    }
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Visits `child`'s parameters with names prefixed by `prefix.`.
pub fn visit_child<A>(prefix: &str, child: &dyn Parameters<A>, f: &mut dyn FnMut(&str, &Param<A>)) {
    child.visit(&mut |n, p| f(&join_name(prefix, n), p));
}

/// Mutable version of [`visit_child`].
pub fn visit_child_mut<A>(
    prefix: &str,
    child: &mut dyn Parameters<A>,
    f: &mut dyn FnMut(&str, &mut Param<A>),
) {
    child.visit_mut(&mut |n, p| f(&join_name(prefix, n), p));
}

/// Visits `child`'s buffers with names prefixed by `prefix.`.
pub fn visit_child_buffers<A>(prefix: &str, child: &dyn Parameters<A>, f: &mut dyn FnMut(&str, &ArrayD<A>)) {
    child.visit_buffers(&mut |n, p| f(&join_name(prefix, n), p));
}

/// Mutable version of [`visit_child_buffers`].
pub fn visit_child_buffers_mut<A>(
    prefix: &str,
    child: &mut dyn Parameters<A>,
    f: &mut dyn FnMut(&str, &mut ArrayD<A>),
) {
    child.visit_buffers_mut(&mut |n, p| f(&join_name(prefix, n), p));
}

/// The names of all trainable parameters, in visit order.
pub fn param_names<A>(model: &dyn Parameters<A>) -> Vec<String> {
    let mut names = Vec::new();
    model.visit(&mut |n, _| names.push(n.to_string()));
    names
}

impl<A, P: Parameters<A> + ?Sized> Parameters<A> for Box<P> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        (**self).visit(f)
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        (**self).visit_mut(f)
    }
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, &ArrayD<A>)) {
        (**self).visit_buffers(f)
    }
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut ArrayD<A>)) {
        (**self).visit_buffers_mut(f)
    }
}
