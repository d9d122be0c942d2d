"""Train a small CNN on scikit-learn's 8x8 digits with NumPy and convbp's three ops only.

The network, written out by hand (no framework):

    image (8x8x1) -> conv 3x3, 32 channels, stride 1, padding 1 -> ReLU   (8x8x32)
                  -> conv 3x3, 64 channels, stride 2, padding 1 -> ReLU   (4x4x64)
                  -> dense 1024 -> 10 -> softmax cross-entropy

The forward pass calls ``convbp.tf.conv2d``; the backward pass calls
``convbp.tf.conv2d_backprop_filter`` (the filter gradient) and ``convbp.tf.conv2d_backprop_input``
(the gradient flowing to the layer below).  Everything else is NumPy.  The same code trains in
NHWC and in NCHW: only the channel axis and the order of the flattened features differ, so from
one initialisation (converted between layouts) both runs take the same steps up to float
rounding (which training amplifies: the script prints how close the two runs end).
``--ops numpy`` swaps in the plain NumPy reference ops (``convbp.reference``), and the script
ends by timing one training step with each.

Run:  python examples/train_digits.py [--layout NHWC|NCHW|both] [--ops convbp|numpy]
                                      [--epochs 12] [--plot loss.png]
Needs scikit-learn (for the bundled digits, no download): pip install 'convbp[examples]'.
"""

import argparse
import math
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import convbp
from convbp import reference

PADDING = ((1, 1), (1, 1))      # (top, bottom), (left, right): as PyTorch's padding=1
STRIDES = (1, 2)                # conv1 keeps 8x8, conv2 halves it to 4x4 (instead of pooling)


# ----------------------------------------------------------------------------------------------
# The three convolution ops, in TensorFlow's conventions (filter HWIO, data_format NHWC/NCHW)

class ConvbpOps:
    """convbp's compiled ops: NHWC and NCHW alike, no layout transposes."""

    name = "convbp"

    @staticmethod
    def conv2d(x, w, stride, data_format):
        return convbp.tf.conv2d(x, w, stride, PADDING, data_format=data_format)

    @staticmethod
    def backprop_input(x_shape, w, dy, stride, data_format):
        return convbp.tf.conv2d_backprop_input(x_shape, w, dy, stride, PADDING,
                                               data_format=data_format)

    @staticmethod
    def backprop_filter(x, w_shape, dy, stride, data_format):
        return convbp.tf.conv2d_backprop_filter(x, w_shape, dy, stride, PADDING,
                                                data_format=data_format)


class NumpyOps:
    """The NumPy baseline (convbp.reference: a matmul per filter tap, NHWC only).

    NCHW arrays go through it as transposed views, as a NumPy framework would do by hand.
    """

    name = "NumPy"

    @staticmethod
    def _nhwc(a, data_format):
        return a.transpose(0, 2, 3, 1) if data_format == "NCHW" else a

    @staticmethod
    def _back(a, data_format):
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2) if data_format == "NCHW" else a)

    @classmethod
    def conv2d(cls, x, w, stride, data_format):
        x = cls._nhwc(x, data_format)
        out_hw = [(size + sum(pad) - k) // stride + 1
                  for size, pad, k in zip(x.shape[1:3], PADDING, w.shape[:2])]
        y = reference.conv2d_nhwc(x, w, out_hw, (stride, stride), pads=PADDING)
        return cls._back(y, data_format)

    @classmethod
    def backprop_input(cls, x_shape, w, dy, stride, data_format):
        in_hw = x_shape[2:] if data_format == "NCHW" else x_shape[1:3]
        dx = reference.conv2d_backprop_input_nhwc(in_hw, w, cls._nhwc(dy, data_format),
                                                  (stride, stride), pads=PADDING)
        return cls._back(dx, data_format)

    @classmethod
    def backprop_filter(cls, x, w_shape, dy, stride, data_format):
        return reference.conv2d_backprop_filter_nhwc(
            cls._nhwc(x, data_format), w_shape, cls._nhwc(dy, data_format), (stride, stride),
            pads=PADDING)


OPS = {"convbp": ConvbpOps, "numpy": NumpyOps}


# ----------------------------------------------------------------------------------------------
# The network

def init_params(rng, image_hw=(8, 8), channels=(32, 64), classes=10, dtype=np.float32):
    """He-initialised parameters, dense rows in NHWC flattening order (h, w, c).

    Filters are HWIO (KH, KW, C_in, C_out) in either layout; see ``to_layout`` for NCHW.
    """
    c1, c2 = channels
    h, w = image_hw[0], image_hw[1]
    for stride in STRIDES:   # each conv: out = (in + 2 - 3) // stride + 1
        h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
    features = h * w * c2
    params = {
        "w1": rng.standard_normal((3, 3, 1, c1)) * np.sqrt(2 / 9),
        "b1": np.zeros(c1),
        "w2": rng.standard_normal((3, 3, c1, c2)) * np.sqrt(2 / (9 * c1)),
        "b2": np.zeros(c2),
        "w3": rng.standard_normal((features, classes)) * np.sqrt(1 / features),
        "b3": np.zeros(classes),
    }
    params = {k: v.astype(dtype) for k, v in params.items()}
    params["feature_hwc"] = (h, w, c2)  # the shape the dense layer flattens (not trained)
    return params


def to_layout(params, layout):
    """The same network for another layout: only the dense rows move.

    NHWC flattens each image's features as (h, w, c), NCHW as (c, h, w).
    """
    if layout == "NHWC":
        return dict(params)
    h, w, c = params["feature_hwc"]
    w3 = params["w3"]
    converted = dict(params)
    converted["w3"] = np.ascontiguousarray(
        w3.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1))
    return converted


def from_layout(params, layout):
    """The inverse of ``to_layout``: the dense rows back in NHWC order."""
    if layout == "NHWC":
        return dict(params)
    h, w, c = params["feature_hwc"]
    converted = dict(params)
    converted["w3"] = np.ascontiguousarray(
        params["w3"].reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1))
    return converted


def channel_view(b, layout):
    """A per-channel vector shaped to broadcast over an NHWC or NCHW batch."""
    return b if layout == "NHWC" else b[:, None, None]


# NumPy's elementwise loops against a repeated block run about twice as fast once the block
# holds >= 8192 values (z += b over 64 8x8x32 images: 27 us with b spread over one image's
# 2048 values, 12 us over four images' 8192), so per-channel vectors are spread over blocks.
MIN_RUN = 8192


def images_per_block(z):
    """The fewest images (dividing the batch) that hold MIN_RUN values, or the whole batch."""
    k = min(len(z), -(-MIN_RUN // z[0].size))
    while len(z) % k:
        k -= 1
    return k


def add_bias_relu(z, b, layout):
    """z = max(z + b, 0) in place (the op's result is ours), b along the channels.

    Against a block of zeros NumPy runs its vectorised maximum; against the scalar 0 a loop
    four times as slow.  In a step, batch 64, NHWC: 8x8x32 60 -> 37 us, 4x4x64 34 -> 22 us
    against a bias add and a ReLU into a new array, each over single images."""
    k = images_per_block(z)
    blocks = z.reshape(len(z) // k, -1)                 # a row per block of k images
    bias = np.empty((k,) + z.shape[1:], z.dtype)        # b spread over k images
    bias[...] = channel_view(b, layout)                 # (np.broadcast_to's Python: 4 us more)
    blocks += bias.reshape(-1)
    np.maximum(blocks, np.zeros(blocks.shape[1], z.dtype), out=blocks)


def channel_sums(a, layout):
    """Sum over every axis but the channels, as matrix-vector products (BLAS): several times
    faster than ``a.sum(axis=...)`` over three axes."""
    if layout == "NHWC":
        rows = a.reshape(-1, a.shape[3])                    # (N*H*W, C)
        return np.ones(len(rows), a.dtype) @ rows
    planes = a.reshape(a.shape[0], -1)                      # (N, C*H*W)
    per_channel = (np.ones(len(planes), a.dtype) @ planes).reshape(a.shape[1], -1)
    return per_channel @ np.ones(per_channel.shape[1], a.dtype)


def forward(params, x, ops, layout):
    """Logits (N, classes) and what the backward pass needs."""
    a1 = ops.conv2d(x, params["w1"], STRIDES[0], layout)
    add_bias_relu(a1, params["b1"], layout)
    a2 = ops.conv2d(a1, params["w2"], STRIDES[1], layout)
    add_bias_relu(a2, params["b2"], layout)
    flat = a2.reshape(len(x), -1)       # (h, w, c) order in NHWC, (c, h, w) in NCHW
    logits = flat @ params["w3"]
    logits += params["b3"]
    return logits, (x, a1, a2, flat)


def softmax_cross_entropy(logits, labels):
    """Mean loss and its gradient with respect to the logits."""
    n = len(labels)
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    totals = probs.sum(axis=1, keepdims=True)
    # -log softmax at the labels: log(sum exp) - shifted logit
    loss = (np.log(totals).sum() - shifted[rows, labels].sum()) / n
    probs /= totals
    probs[rows, labels] -= 1
    probs /= n
    return loss, probs


def loss_and_grads(params, x, labels, ops, layout, input_grad=False):
    """Loss, the gradient of every parameter and, if asked, the gradient with respect to the
    images (training does not need it; a gradient check or an adversarial example does).

    The ops' results are fresh arrays, so the ReLU masks are applied to them in place.  The
    masks read a > 0, the same as z > 0 for a = max(z, 0): the forward pass keeps no z.  (A
    multiply by the bool mask was the fastest found: np.copyto or np.where with it 10-15x
    slower, a mask made in the forward pass no faster over the whole step.)"""
    logits, (x, a1, a2, flat) = forward(params, x, ops, layout)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    grads = {"w3": flat.T @ dlogits, "b3": dlogits.sum(axis=0)}

    # w3's transpose copied (10x1024, small): OpenBLAS runs this thin product twice as fast
    # with a contiguous right operand.
    dz2 = (dlogits @ np.ascontiguousarray(params["w3"].T)).reshape(a2.shape)
    np.multiply(dz2, a2 > 0, out=dz2)
    grads["w2"] = ops.backprop_filter(a1, params["w2"].shape, dz2, STRIDES[1], layout)
    grads["b2"] = channel_sums(dz2, layout)
    dz1 = ops.backprop_input(a1.shape, params["w2"], dz2, STRIDES[1], layout)
    np.multiply(dz1, a1 > 0, out=dz1)
    grads["w1"] = ops.backprop_filter(x, params["w1"].shape, dz1, STRIDES[0], layout)
    grads["b1"] = channel_sums(dz1, layout)
    dx = ops.backprop_input(x.shape, params["w1"], dz1, STRIDES[0], layout) if input_grad else None
    return loss, grads, dx


TRAINED = ("w1", "b1", "w2", "b2", "w3", "b3")   # params also holds the feature shape


class Adam:
    """Adam (Kingma & Ba), elementwise, so it treats both layouts' parameters alike.

    The parameters, their gradient and both moments live in one flat vector each (the arrays
    in ``params`` become views of the optimizer's vector): an update is eleven whole-vector
    operations, instead of a dozen and one for every parameter array.

    The moments are kept unnormalised, m = sum_i beta1^(t-i) g_i and likewise v over g_i^2
    (Adam's moments over 1 - beta), so that each takes one pass fewer: m = beta1 m + g.  The
    constant factors move into the step's scale and eps.  In a step, batch 64: 80-88 -> 65-76 us.
    """

    def __init__(self, params, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps, self.t = lr, beta1, beta2, eps, 0
        self.slices, size = {}, 0           # where each parameter sits in the flat vectors
        for k in TRAINED:
            self.slices[k] = slice(size, size + params[k].size)
            size += params[k].size
        self.values = np.concatenate([params[k].ravel() for k in TRAINED])
        for k in TRAINED:
            params[k] = self.values[self.slices[k]].reshape(params[k].shape)
        self.grad = np.empty_like(self.values)
        self.m = np.zeros_like(self.values)
        self.v = np.zeros_like(self.values)
        self.change = np.empty_like(self.values)

    def step(self, grads):
        self.t += 1
        # Adam's step lr sqrt(1 - beta2^t) / (1 - beta1^t) * M / (sqrt(V) + eps) for its moments
        # M = (1 - beta1) m and V = (1 - beta2) v.  Python floats: the update stays in the
        # parameters' precision (float32).
        root = math.sqrt(1 - self.beta2)
        scale = (self.lr * math.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
                 * (1 - self.beta1) / root)
        g, m, v, change = self.grad, self.m, self.v, self.change
        np.concatenate([grads[k].ravel() for k in TRAINED], out=g)
        m *= self.beta1
        m += g
        np.multiply(g, g, out=g)
        v *= self.beta2
        v += g
        np.sqrt(v, out=change)
        change += self.eps / root
        np.divide(m, change, out=change)
        change *= scale
        self.values -= change


# ----------------------------------------------------------------------------------------------
# Data, training, timing

def load_data(subset=None, seed=0, dtype=np.float32):
    """The digits as (N, 8, 8, 1) images in [0, 1], an 80/20 stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("This example needs scikit-learn for its bundled digits data set: "
                 "pip install scikit-learn  (or pip install 'convbp[examples]')")
    digits = load_digits()
    images = (digits.images / 16.0).astype(dtype)[..., None]   # NHWC
    labels = digits.target
    if subset is not None:
        keep = np.random.default_rng(seed).permutation(len(labels))[:subset]
        images, labels = images[keep], labels[keep]
    return train_test_split(images, labels, test_size=0.2, random_state=seed, stratify=labels)


def as_layout(images_nhwc, layout):
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2) if layout == "NCHW"
                                else images_nhwc)


def predict(params, x, ops, layout, batch=256):
    return np.concatenate([forward(params, x[start:start + batch], ops, layout)[0].argmax(axis=1)
                           for start in range(0, len(x), batch)])


def mean_loss(params, x, labels, ops, layout):
    logits, _ = forward(params, x, ops, layout)
    return softmax_cross_entropy(logits, labels)[0]


def train(data, layout, ops, epochs, batch_size, seed, lr, log=print):
    """Train from the seed's initialisation; returns the final parameters and the history."""
    x_train, x_test, y_train, y_test = data
    x_train, x_test = as_layout(x_train, layout), as_layout(x_test, layout)
    params = to_layout(init_params(np.random.default_rng(seed), dtype=x_train.dtype), layout)
    optimizer = Adam(params, lr=lr)
    order_rng = np.random.default_rng(seed + 1)     # the same batches in every layout
    history = {"loss": [mean_loss(params, x_train, y_train, ops, layout)],
               "train_acc": [], "test_acc": [], "epoch_time": []}
    log(f"{layout} with {ops.name} ops: initial loss {history['loss'][0]:.4f}")
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = order_rng.permutation(len(x_train))
        losses = []
        for first in range(0, len(order), batch_size):
            batch = order[first:first + batch_size]
            loss, grads, _ = loss_and_grads(params, x_train[batch], y_train[batch], ops, layout)
            optimizer.step(grads)
            losses.append(loss * len(batch))
        elapsed = time.perf_counter() - start
        history["loss"].append(sum(losses) / len(order))
        history["test_pred"] = predict(params, x_test, ops, layout)
        history["train_acc"].append((predict(params, x_train, ops, layout) == y_train).mean())
        history["test_acc"].append((history["test_pred"] == y_test).mean())
        history["epoch_time"].append(elapsed)
        log(f"{layout} epoch {epoch:2d}  loss {history['loss'][-1]:.4f}  "
            f"train acc {history['train_acc'][-1]:6.2%}  test acc {history['test_acc'][-1]:6.2%}"
            f"  {elapsed:.2f} s")
    return params, history


STEP_REPEAT = 200  # timed steps per op set, the best printed (the machine's speed drifts)


class TimedOps:
    """The same ops, adding up the time spent in them."""

    def __init__(self, ops):
        self.ops, self.name, self.seconds = ops, ops.name, 0.0

    def __getattr__(self, op):          # conv2d, backprop_input, backprop_filter
        function = getattr(self.ops, op)

        def timed(*args):
            start = time.perf_counter()
            result = function(*args)
            self.seconds += time.perf_counter() - start
            return result
        return timed


def step_times(data, layout, ops_sets, batch_size, seed, repeat=STEP_REPEAT, block=10):
    """For each op set, the best time of one training step (forward, backward, Adam update) on
    one batch, and the time its convolutions took in that step.  The op sets take turns, a block
    of back-to-back steps each (as in training), so that both see the machine alike."""
    x_train, _, y_train, _ = data
    x, labels = as_layout(x_train[:batch_size], layout), y_train[:batch_size]
    runs = []
    for ops in ops_sets:
        params = to_layout(init_params(np.random.default_rng(seed), dtype=x.dtype), layout)
        runs.append((ops, params, Adam(params)))
    best = [(np.inf, np.inf)] * len(runs)
    for _ in range(-(-repeat // block)):
        for i, (ops, params, optimizer) in enumerate(runs):
            for _ in range(block):
                timed = TimedOps(ops)
                start = time.perf_counter()
                _, grads, _ = loss_and_grads(params, x, labels, timed, layout)
                optimizer.step(grads)
                best[i] = min(best[i], (time.perf_counter() - start, timed.seconds))
    return best


def compare_layouts(results, dtype):
    """How close the NHWC and NCHW runs are: the same steps, summed in different orders."""
    nhwc, nchw = results["NHWC"], results["NCHW"]
    losses = [np.asarray(r["history"]["loss"]) for r in (nhwc, nchw)]
    loss_diff = (np.abs(losses[0] - losses[1]) / losses[0]).max()
    changed = (nhwc["history"]["test_pred"] != nchw["history"]["test_pred"]).sum()
    param_diff = max(float(np.abs(nhwc["params"][k] - nchw["params"][k]).max()
                           / np.abs(nhwc["params"][k]).max()) for k in TRAINED)
    print(f"NHWC vs NCHW: epoch losses agree to {loss_diff:.0e} (relative), "
          f"{changed} of {len(nhwc['history']['test_pred'])} test predictions differ, final "
          f"weights agree to {param_diff:.0e} of each array's largest entry ({dtype} rounding: "
          f"the layouts sum in different orders, and training amplifies the difference)")


def plot(histories, path, title):
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: no plot written to {path}")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(8, 3.2))
    for (layout, history), style in zip(histories.items(), ("o-", "x--")):
        epochs = np.arange(len(history["loss"]))
        loss_ax.plot(epochs, history["loss"], style, label=layout)
        acc_ax.plot(epochs[1:], history["test_acc"], style, label=layout)
    loss_ax.set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy")
    acc_ax.legend()
    for ax in (loss_ax, acc_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"loss curve written to {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=("NHWC", "NCHW", "both"), default="both")
    parser.add_argument("--ops", choices=tuple(OPS), default="convbp",
                        help="the convolution ops to train with (default convbp)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--subset", type=int, default=None,
                        help="use only this many images (a quick smoke run)")
    parser.add_argument("--plot", metavar="PATH", help="write the loss curve (needs matplotlib)")
    parser.add_argument("--no-timing", action="store_true",
                        help="skip timing one training step with convbp's and NumPy's ops")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="threads for NumPy's own BLAS calls (default 1; 0: NumPy's default)")
    args = parser.parse_args(argv)
    # convbp runs its own OpenMP threads.  A second pool -- NumPy's BLAS threads for the dense
    # layer and for the NumPy reference ops -- would contend with them for the same cores
    # between calls (both pools spin a while before sleeping).  The small matmuls here gain
    # nothing from BLAS threads, so by default both ops run with NumPy's BLAS on one thread.
    with threadpool_limits(limits=args.blas_threads or None, user_api="blas"):
        return run(args)


def run(args):
    start = time.perf_counter()
    data = load_data(args.subset, args.seed, np.dtype(args.dtype))
    layouts = ("NHWC", "NCHW") if args.layout == "both" else (args.layout,)
    ops = OPS[args.ops]
    print(f"digits: {len(data[0])} training, {len(data[1])} test images; "
          f"{convbp.default_num_threads()} convbp threads, NumPy's BLAS on "
          f"{args.blas_threads or 'its default'} thread(s)")
    results = {}
    for layout in layouts:
        params, history = train(data, layout, ops, args.epochs, args.batch_size, args.seed,
                                args.lr)
        results[layout] = {"params": from_layout(params, layout), "history": history}
        print(f"{layout}: test accuracy {history['test_acc'][-1]:.2%}, "
              f"{sum(history['epoch_time']):.1f} s training")

    if len(layouts) == 2:
        compare_layouts(results, args.dtype)
    if not args.no_timing:
        print(f"one training step, batch of {args.batch_size} (best of {STEP_REPEAT}, the two "
              f"op sets taking turns every 10), and the time of its five convolution ops:")
        for layout in layouts:
            (ours, ours_conv), (numpy, numpy_conv) = step_times(
                data, layout, (OPS["convbp"], OPS["numpy"]), args.batch_size, args.seed)
            print(f"  {layout}: convbp {ours * 1e3:.2f} ms (convolutions {ours_conv * 1e3:.2f}), "
                  f"NumPy reference {numpy * 1e3:.2f} ms (convolutions {numpy_conv * 1e3:.2f}): "
                  f"{numpy / ours:.1f}x per step, {numpy_conv / ours_conv:.1f}x in the "
                  f"convolutions")
    if args.plot:
        plot({layout: results[layout]["history"] for layout in layouts}, args.plot,
             f"8x8 digits, a CNN on {ops.name}'s ops")
    print(f"total {time.perf_counter() - start:.1f} s")
    return results


if __name__ == "__main__":
    main()
