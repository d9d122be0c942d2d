"""convbp's convolution as one differentiable function in HIPS autograd.

``conv2d`` below is an autograd primitive: its forward pass is ``convbp.tf.conv2d`` and its two
vector-Jacobian products are the other two ops -- ``conv2d_backprop_input`` carries the output
gradient back to the input, ``conv2d_backprop_filter`` to the filter.  With it, ``autograd.grad``
differentiates any NumPy model built from it, in NHWC or NCHW, any strides and padding.

The script trains a tiny CNN to tell horizontal from vertical bars in noisy 8x8 images, in both
layouts, then checks the gradient against central finite differences.

Run:  python examples/autodiff.py          (needs autograd: pip install autograd)
"""

import sys

import numpy as np

try:
    import autograd.numpy as anp
    from autograd import grad
    from autograd.extend import defvjp, primitive
except ImportError:
    sys.exit("This example needs HIPS autograd: pip install autograd")

import convbp


@primitive
def conv2d(x, filter, strides, padding, data_format="NHWC"):
    """``tf.nn.conv2d`` (filter HWIO), differentiable with respect to ``x`` and ``filter``."""
    return convbp.tf.conv2d(x, filter, strides, padding, data_format=data_format)


def _input_vjp(y, x, filter, strides, padding, data_format="NHWC"):
    # dy, the gradient of a loss with respect to y = conv2d(x, filter) -> the gradient dx.
    # autograd may hand back dy wider than y (float32 y, float64 loss arithmetic): y's dtype.
    return lambda dy: convbp.tf.conv2d_backprop_input(
        x.shape, filter, dy.astype(y.dtype, copy=False), strides, padding,
        data_format=data_format)


def _filter_vjp(y, x, filter, strides, padding, data_format="NHWC"):
    # ... and the filter's gradient: the same dy correlated with the input.
    return lambda dy: convbp.tf.conv2d_backprop_filter(
        x, filter.shape, dy.astype(y.dtype, copy=False), strides, padding,
        data_format=data_format)


defvjp(conv2d, _input_vjp, _filter_vjp)


# ----------------------------------------------------------------------------------------------
# A tiny model: conv 3x3 (SAME) -> ReLU -> conv 3x3 stride 2 (SAME) -> ReLU -> mean -> dense

def init_params(rng, channels=(4, 8), classes=2):
    c1, c2 = channels
    return {"w1": rng.standard_normal((3, 3, 1, c1)) * np.sqrt(2 / 9),
            "w2": rng.standard_normal((3, 3, c1, c2)) * np.sqrt(2 / (9 * c1)),
            "w3": rng.standard_normal((c2, classes)) * np.sqrt(1 / c2),
            "b3": np.zeros(classes)}


def model(params, x, layout):
    spatial = (1, 2) if layout == "NHWC" else (2, 3)
    a1 = anp.maximum(conv2d(x, params["w1"], 1, "SAME", data_format=layout), 0)
    a2 = anp.maximum(conv2d(a1, params["w2"], 2, "SAME", data_format=layout), 0)
    features = anp.mean(a2, axis=spatial)           # global average pooling: (N, C)
    return anp.dot(features, params["w3"]) + params["b3"]


def loss(params, x, labels, layout):
    logits = model(params, x, layout)
    shifted = logits - anp.max(logits, axis=1, keepdims=True)
    log_probs = shifted - anp.log(anp.sum(anp.exp(shifted), axis=1, keepdims=True))
    return -anp.mean(log_probs[np.arange(len(labels)), labels])


def bars(rng, n, size=8, noise=0.3):
    """Images (N, H, W, 1) with one horizontal (label 0) or vertical (label 1) bar, plus noise."""
    labels = rng.integers(0, 2, n)
    images = noise * rng.standard_normal((n, size, size))
    where = rng.integers(0, size, n)
    for i in range(n):
        if labels[i] == 0:
            images[i, where[i], :] += 1
        else:
            images[i, :, where[i]] += 1
    return images[..., None], labels


def to_layout(images_nhwc, layout):
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2) if layout == "NCHW"
                                else images_nhwc)


def train(layout, steps=150, lr=0.3, seed=0):
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    x, labels = bars(rng, 256)
    x = to_layout(x, layout)
    loss_grad = grad(loss)                          # d loss / d params, through convbp
    for step in range(steps + 1):
        if step % 50 == 0:
            accuracy = (model(params, x, layout).argmax(axis=1) == labels).mean()
            print(f"  {layout} step {step:3d}  loss {loss(params, x, labels, layout):.4f}  "
                  f"train accuracy {accuracy:.1%}")
        if step < steps:
            grads = loss_grad(params, x, labels, layout)
            params = {k: params[k] - lr * grads[k] for k in params}
    x_new, labels_new = bars(rng, 256)
    accuracy = (model(params, to_layout(x_new, layout), layout).argmax(axis=1) == labels_new).mean()
    print(f"  {layout} accuracy on 256 new images: {accuracy:.1%}")
    return params


def gradient_check(layout, seed=1, h=1e-6):
    """autograd's gradient vs central finite differences along random directions (float64)."""
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    x, labels = bars(rng, 4)
    x = to_layout(x, layout)
    # Differentiate with respect to the images too: argnum 1 goes through conv2d_backprop_input.
    grads, dx = grad(lambda p, images: loss(p, images, labels, layout), argnum=(0, 1))(params, x)
    worst = 0.0
    for _ in range(5):
        v = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        vx = rng.standard_normal(x.shape)
        plus = loss({k: params[k] + h * v[k] for k in params}, x + h * vx, labels, layout)
        minus = loss({k: params[k] - h * v[k] for k in params}, x - h * vx, labels, layout)
        numeric = (plus - minus) / (2 * h)
        analytic = sum(np.vdot(grads[k], v[k]) for k in params) + np.vdot(dx, vx)
        worst = max(worst, abs(numeric - analytic) / abs(analytic))
    return worst


def main():
    for layout in ("NHWC", "NCHW"):
        print(f"training a tiny CNN with autograd through convbp.tf.conv2d ({layout}):")
        train(layout)
    for layout in ("NHWC", "NCHW"):
        error = gradient_check(layout)
        print(f"gradient check {layout}: autograd vs central differences (5 random directions, "
              f"float64): max relative error {error:.1e}")
        assert error < 1e-6


if __name__ == "__main__":
    main()
