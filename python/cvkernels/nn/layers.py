"""Layers in the style of ``torch.nn``, built on ``cvkernels.functional``.

Constructors take ``generator=`` (a ``np.random.Generator``; default: ``nn.init``'s default
generator, reseeded by ``manual_seed``) and ``dtype=`` (default float32). Parameters start on
the host; ``module.to('cuda')`` moves them to the GPU as CuPy arrays.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from .. import functional as F
from .._checks import check_size, pair
from ..autograd import Tensor, array_module
from ..errors import ArgumentError, ShapeError
from . import init
from .module import Module, Parameter
from .norm import affine_parameters

__all__ = ["Linear", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
           "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "ReLU", "LeakyReLU",
           "ELU", "GELU", "Sigmoid",
           "Tanh", "Softmax", "LogSoftmax", "Dropout", "Flatten", "Identity",
           "MultiheadAttention", "Sequential", "ModuleList", "CrossEntropyLoss",
           "MultiMarginLoss", "NLLLoss"]


def _empty(shape, dtype):
    return Parameter(np.zeros(shape, dtype=dtype))


class Identity(Module):
    """Returns its input."""

    def forward(self, input):
        """Return ``input`` unchanged."""
        return input


class Linear(Module):
    """``y = x W^T + b``; W ``[out, in]`` ~ kaiming_uniform(a=sqrt(5)) i.e. U(+-1/sqrt(in)),
    b ~ U(+-1/sqrt(in)), as torch."""

    def __init__(self, in_features, out_features, bias=True, *, generator=None,
                 dtype=np.float32):
        super().__init__()
        in_features = check_size("Linear", "in_features", in_features)
        out_features = check_size("Linear", "out_features", out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty((out_features, in_features), dtype)
        self.bias = _empty((out_features,), dtype) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        """Re-draw the weights as torch's ``Linear.reset_parameters``."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        if self.bias is not None:
            fan_in = self.weight.shape[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound, generator=generator)

    def forward(self, input):
        """Apply the affine map."""
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class _ConvNd(Module):
    def _init_params(self, wshape, out_channels, bias, generator, dtype):
        self.weight = _empty(wshape, dtype)
        if bias:
            self.bias = _empty((out_channels,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        """Re-draw the weights as torch's ``_ConvNd.reset_parameters``."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        if self.bias is not None:
            fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight.shape)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound, generator=generator)

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class Conv2d(_ConvNd):
    """2-D convolution layer; weight ``[out, in/groups, kH, kW]``. ``padding_mode`` 'zeros',
    'reflect', 'replicate' or 'circular': as torch, the other modes pad with ``F.pad`` and then
    convolve with padding 0. A bad ``padding``/``padding_mode`` raises at construction."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, generator=None,
                 dtype=np.float32):
        super().__init__()
        _check_conv_padding("Conv2d", padding, padding_mode, stride)
        in_channels = check_size("Conv2d", "in_channels", in_channels)
        out_channels = check_size("Conv2d", "out_channels", out_channels)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair("Conv2d", "kernel_size", kernel_size)
        if min(self.kernel_size) <= 0:                # torch: "non-positive kernel size"
            raise ArgumentError(f"Conv2d: kernel_size must be positive, got {kernel_size!r}")
        self.stride = pair("Conv2d", "stride", stride)
        self.padding = padding if isinstance(padding, str) else pair("Conv2d", "padding", padding)
        self.dilation, self.groups = pair("Conv2d", "dilation", dilation), groups
        self.padding_mode = padding_mode
        self._init_params((out_channels, in_channels // groups) + self.kernel_size,
                          out_channels, bias, generator, dtype)

    def forward(self, input):
        """Convolve ``input`` ``[N, C_in, H, W]`` (or unbatched ``[C_in, H, W]``)."""
        if self.padding_mode != "zeros":
            return F.conv2d(F.pad(input, self._pads(), mode=self.padding_mode), self.weight,
                            self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def _pads(self):
        """F.pad's (left, right, top, bottom) for this layer's padding ('same': the extra one
        goes right/bottom, as torch)."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            out = []
            for d, k in zip(self.dilation[::-1], self.kernel_size[::-1]):
                total = d * (k - 1)
                out += [total // 2, total - total // 2]
            return tuple(out)
        ph, pw = self.padding
        return (pw, pw, ph, ph)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution layer; weight ``[in, out/groups, kH, kW]``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros", *,
                 generator=None, dtype=np.float32):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"ConvTranspose2d: only padding_mode='zeros' is supported, got "
                             f"{padding_mode!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        fn = "ConvTranspose2d"
        self.kernel_size = pair(fn, "kernel_size", kernel_size)
        self.stride = pair(fn, "stride", stride)
        self.padding = pair(fn, "padding", padding)
        self.output_padding = pair(fn, "output_padding", output_padding)
        self.dilation, self.groups = pair(fn, "dilation", dilation), groups
        self._init_params((in_channels, out_channels // groups) + self.kernel_size,
                          out_channels, bias, generator, dtype)

    def forward(self, input):
        """Apply the transposed convolution to ``input`` ``[N, C_in, H, W]``."""
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


class BatchNorm2d(Module):
    """Batch normalisation over ``[N, C, H, W]`` with torch's running statistics.

    Buffers ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked``
    (int64 scalar) are in ``state_dict``. Training normalises with batch statistics and updates
    the running ones (``momentum=None``: cumulative average); eval uses the running ones.
    ``affine=True, bias=False`` (torch's spelling) learns a weight and no bias. ``eps`` must be
    positive: checked at forward, as torch does.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, bias=True, dtype=np.float32):
        super().__init__()
        num_features = check_size(type(self).__name__, "num_features", num_features)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            if bias:
                self.bias = Parameter(np.zeros(num_features, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            for n in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(n, None)

    def reset_running_stats(self):
        """Running mean 0, variance 1, count 0."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, input):
        """Normalise ``input`` ``[N, C, H, W]`` (BatchNorm1d: ``[N, C]`` or ``[N, C, L]``)."""
        self._check_input_dim(input)
        if not self.eps > 0:
            raise ArgumentError(f"{type(self).__name__}: eps must be positive, got {self.eps!r}")
        bn_training = self.training or self.running_mean is None
        track = self.training and self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            self.weight, self.bias, bn_training, self.momentum, self.eps,
            num_batches_tracked=self.num_batches_tracked if track else None)

    def _check_input_dim(self, input):
        if input.ndim != 4:
            raise ShapeError(f"BatchNorm2d: expected 4-D input [N, C, H, W], got shape "
                             f"{tuple(input.shape)}")

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(BatchNorm2d):
    """Batch normalisation over ``[N, C]`` or ``[N, C, L]`` (torch's BatchNorm1d); the same
    arguments, buffers and running-statistic rules as :class:`BatchNorm2d`."""

    def _check_input_dim(self, input):
        if input.ndim not in (2, 3):
            raise ShapeError(f"BatchNorm1d: expected 2-D or 3-D input [N, C] or [N, C, L], "
                             f"got shape {tuple(input.shape)}")


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` dims; weight 1, bias 0."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *,
                 dtype=np.float32):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) \
            else tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        affine_parameters(self, self.normalized_shape, elementwise_affine, bias, dtype)

    def forward(self, input):
        """Normalise ``input``."""
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class MaxPool2d(Module):
    """2-D max pooling (torch's argument order: ``return_indices`` before ``ceil_mode``)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode

    def forward(self, input):
        """Pool ``input``."""
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, self.return_indices)

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        """Pool ``input``."""
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Adaptive 2-D average pooling to ``output_size``."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        """Pool ``input``."""
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Adaptive 2-D max pooling to ``output_size`` (``return_indices`` as torch)."""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, input):
        """Pool ``input``."""
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return f"output_size={self.output_size}"


class ReLU(Module):
    """max(x, 0)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        """Apply relu."""
        return F.relu(input, self.inplace)


class LeakyReLU(Module):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input):
        """Apply leaky_relu."""
        return F.leaky_relu(input, self.negative_slope, self.inplace)


class ELU(Module):
    """x if x > 0 else alpha * (exp(x) - 1)."""

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, input):
        """Apply elu."""
        return F.elu(input, self.alpha, self.inplace)


class GELU(Module):
    """x * Phi(x), or its tanh approximation."""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        """Apply gelu."""
        return F.gelu(input, self.approximate)


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, input):
        """Apply sigmoid."""
        return F.sigmoid(input)


class Tanh(Module):
    """tanh(x)."""

    def forward(self, input):
        """Apply tanh."""
        return F.tanh(input)


class Softmax(Module):
    """Softmax along ``dim``."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        """Apply softmax."""
        return F.softmax(input, self.dim, _stacklevel=5)   # warn at the module's caller


class LogSoftmax(Module):
    """Log-softmax along ``dim``."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        """Apply log_softmax."""
        return F.log_softmax(input, self.dim, _stacklevel=5)


class Dropout(Module):
    """Inverted dropout, active in training mode only. ``generator`` (a
    ``cvkernels.random.Generator``, whose Philox offset advances each call, or a
    np.random.Generator, which gives a fresh seed each call) makes the masks reproducible;
    default: ``cvkernels.random.default_generator()`` (see ``functional.dropout``)."""

    def __init__(self, p=0.5, inplace=False, *, generator=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.inplace, self.generator = p, inplace, generator

    def forward(self, input):
        """Apply dropout (identity in eval mode)."""
        if not self.training or self.p == 0:
            return input
        return F.dropout(input, self.p, True, self.inplace, generator=self.generator)

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return f"p={self.p}"


class Flatten(Module):
    """Flatten dims ``start_dim..end_dim`` (default: all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        """Flatten ``input``."""
        if isinstance(input, Tensor):
            return input.flatten(self.start_dim, self.end_dim)
        s = input.shape
        a, b = self.start_dim % len(s), self.end_dim % len(s)
        return input.reshape(tuple(s[:a]) + (-1,) + tuple(s[b + 1:]))


_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _check_conv_padding(fn, padding, padding_mode, stride):
    """torch's constructor checks of padding and padding_mode."""
    if padding_mode not in _PADDING_MODES:
        raise ArgumentError(f"{fn}: padding_mode must be one of {_PADDING_MODES}, got "
                            f"{padding_mode!r}")
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ArgumentError(f"{fn}: invalid padding string {padding!r}, should be one of "
                                f"('valid', 'same')")
        if padding == "same" and pair(fn, "stride", stride) != (1, 1):
            raise ArgumentError(f"{fn}: padding='same' is not supported for strided "
                                f"convolutions")


class Sequential(Module):
    """Modules applied in order: ``Sequential(m1, m2)`` or ``Sequential(OrderedDict(...))``."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def __getitem__(self, i):
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(*mods[i])
        return mods[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        """Add ``module`` at the end."""
        self.add_module(str(len(self)), module)
        return self

    def forward(self, input):
        """Feed ``input`` through every module."""
        for m in self._modules.values():
            input = m(input)
        return input


class ModuleList(Module):
    """A list of modules, registered as children."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        """Add ``module`` at the end."""
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


from .loss import CrossEntropyLoss, MultiMarginLoss, NLLLoss  # noqa: E402,F401  (nn/loss.py)
from .attention import MultiheadAttention  # noqa: E402,F401  (lives in nn/attention.py)
