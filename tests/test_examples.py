"""The examples' gradients are right, and the training example runs and learns.

examples/train_digits.py writes a CNN's backward pass by hand on convbp's three ops;
examples/autodiff.py registers them as one autograd primitive.  Both are checked in float64, in
NHWC and NCHW, against PyTorch autograd (when installed) and against central finite differences,
which depend on nothing but the forward pass.
"""

import importlib.util
import os

import numpy as np
import pytest

from oracle import assert_close, tf_same_pads, torch

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
LAYOUTS = ("NHWC", "NCHW")
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def load_example(name):
    path = os.path.join(EXAMPLES, name + ".py")
    if not os.path.exists(path):
        pytest.skip("examples/ is not next to the tests (installed tests only)")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits():
    return load_example("train_digits")


@pytest.fixture(scope="module")
def autodiff():
    pytest.importorskip("autograd")
    return load_example("autodiff")


def central_differences(f, arrays, h=1e-6):
    """d f / d a for every entry of every array in ``arrays`` (modified in place, restored)."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            saved = a[i]
            a[i] = saved + h
            plus = f()
            a[i] = saved - h
            minus = f()
            a[i] = saved
            g[i] = (plus - minus) / (2 * h)
        grads.append(g)
    return grads


# Central differences with h = 1e-6 on a loss of order 1 err by O(h^2) (truncation) plus
# O(eps / h) ~ 1e-10 (rounding); 1e-7 relative to the largest entry leaves a wide margin and
# still catches any wrong index, stride, padding or transposition (errors of order 1).
FD_TOLERANCE = 1e-7


def assert_fd_close(actual, expected):
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= FD_TOLERANCE * scale


# ----------------------------------------------------------------------------------------------
# examples/train_digits.py: the hand-written backward pass

def tiny_network(digits, layout, seed=0):
    """A float64 network on 6x6 images, 2 and 3 channels, 3 classes, random biases."""
    rng = np.random.default_rng(seed)
    params = digits.init_params(rng, image_hw=(6, 6), channels=(2, 3), classes=3,
                                dtype=np.float64)
    for k in ("b1", "b2", "b3"):
        params[k] = 0.1 * rng.standard_normal(params[k].shape)
    x = rng.random((2, 6, 6, 1))
    labels = np.array([2, 0])
    return digits.to_layout(params, layout), digits.as_layout(x, layout), labels


def torch_reference(params, x, labels, layout):
    """Loss, parameter and input gradients of the same network by PyTorch autograd."""
    F = torch.nn.functional
    leaves = {k: torch.tensor(params[k], requires_grad=True) for k in ("w1", "b1", "w2", "b2",
                                                                        "w3", "b3")}
    x_t = torch.tensor(x, requires_grad=True)
    a = x_t.permute(0, 3, 1, 2) if layout == "NHWC" else x_t          # NCHW for torch
    for i, stride in ((1, 1), (2, 2)):
        weight = leaves[f"w{i}"].permute(3, 2, 0, 1)                       # HWIO -> OIHW
        a = F.relu(F.conv2d(a, weight, leaves[f"b{i}"], stride=stride, padding=1))
    # The dense layer reads the features in the layout's own order: (h, w, c) or (c, h, w).
    flat = (a.permute(0, 2, 3, 1) if layout == "NHWC" else a).reshape(len(x), -1)
    loss = F.cross_entropy(flat @ leaves["w3"] + leaves["b3"], torch.tensor(labels))
    loss.backward()
    return (loss.item(), {k: v.grad.numpy() for k, v in leaves.items()}, x_t.grad.numpy())


@needs_torch
@pytest.mark.parametrize("ops", ["convbp", "numpy"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_digits_gradients_match_torch(digits, layout, ops):
    params, x, labels = tiny_network(digits, layout)
    loss, grads, dx = digits.loss_and_grads(params, x, labels, digits.OPS[ops], layout,
                                           input_grad=True)
    ref_loss, ref_grads, ref_dx = torch_reference(params, x, labels, layout)
    # The longest chain of float64 sums a gradient passes through: dense (27 features), conv2's
    # input gradient (3*3*3 taps), conv1's filter gradient (2 images * 36 pixels).
    chain = 27 + 27 + 72
    assert loss == pytest.approx(ref_loss, rel=1e-14)
    for k, g in grads.items():
        assert_close(g, ref_grads[k], np.float64, chain)
    assert_close(dx, ref_dx, np.float64, chain)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_digits_gradients_match_finite_differences(digits, layout):
    params, x, labels = tiny_network(digits, layout)
    ops = digits.ConvbpOps

    def loss():  # the forward pass only: independent of the backward code under test
        return digits.softmax_cross_entropy(digits.forward(params, x, ops, layout)[0], labels)[0]

    # No ReLU input is within reach of a step h (kinks would spoil the differences).  The
    # forward pass applies its ReLUs in place, so the inputs are recomputed here.
    def relu_input(a, layer):
        z = ops.conv2d(a, params[f"w{layer}"], digits.STRIDES[layer - 1], layout)
        return z + digits.channel_view(params[f"b{layer}"], layout)

    z1 = relu_input(x, 1)
    z2 = relu_input(np.maximum(z1, 0), 2)
    assert min(np.abs(z1).min(), np.abs(z2).min()) > 1e-4

    _, grads, dx = digits.loss_and_grads(params, x, labels, ops, layout, input_grad=True)
    names = list(digits.TRAINED)
    numeric = central_differences(loss, [params[k] for k in names] + [x])
    for k, g in zip(names, numeric):
        assert_fd_close(grads[k], g)
    assert_fd_close(dx, numeric[-1])


def test_train_digits_layouts_give_the_same_network(digits):
    """One initialisation converted between layouts: the same logits and, converted back, the
    same gradients."""
    params, x, labels = tiny_network(digits, "NHWC")
    nchw = digits.to_layout(params, "NCHW")
    x_nchw = digits.as_layout(x, "NCHW")
    ops = digits.ConvbpOps
    logits, _ = digits.forward(params, x, ops, "NHWC")
    logits_nchw, _ = digits.forward(nchw, x_nchw, ops, "NCHW")
    assert_close(logits_nchw, logits, np.float64, 27 * 3)
    _, grads, dx = digits.loss_and_grads(params, x, labels, ops, "NHWC", input_grad=True)
    _, grads_nchw, dx_nchw = digits.loss_and_grads(nchw, x_nchw, labels, ops, "NCHW",
                                                   input_grad=True)
    grads_nchw = digits.from_layout(dict(grads_nchw, feature_hwc=params["feature_hwc"]), "NCHW")
    for k in digits.TRAINED:
        assert_close(grads_nchw[k], grads[k], np.float64, 27 + 27 + 72)
    assert_close(dx_nchw.transpose(0, 2, 3, 1), dx, np.float64, 27 + 27 + 72)


def test_train_digits_smoke(digits, tmp_path, capsys):
    pytest.importorskip("sklearn")
    plot = tmp_path / "loss.png"
    results = digits.main(["--epochs", "1", "--subset", "300", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert "NHWC epoch  1" in out and "NCHW epoch  1" in out
    assert out.count("x per step") == 2          # the timing ran for both layouts
    for layout in LAYOUTS:
        history = results[layout]["history"]
        assert history["loss"][1] < history["loss"][0]          # one epoch learns something
        assert 0 <= history["test_acc"][0] <= 1
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in out and not plot.exists()
    else:
        assert plot.read_bytes().startswith(b"\x89PNG")


def test_train_digits_layouts_train_alike(digits, capsys):
    """Float64, same seed: the NHWC and NCHW runs take the same steps up to rounding."""
    pytest.importorskip("sklearn")
    results = digits.main(["--epochs", "1", "--subset", "300", "--no-timing",
                           "--dtype", "float64"])
    capsys.readouterr()
    nhwc, nchw = results["NHWC"], results["NCHW"]
    np.testing.assert_allclose(nchw["history"]["loss"], nhwc["history"]["loss"], rtol=1e-12)
    for k in digits.TRAINED:
        scale = np.abs(nhwc["params"][k]).max()
        assert np.abs(nchw["params"][k] - nhwc["params"][k]).max() <= 1e-10 * scale


def block_import(monkeypatch, package):
    """Make ``import package`` (and its submodules) fail, as if it were not installed."""
    import builtins
    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name == package or name.startswith(package + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)


def test_train_digits_needs_scikit_learn(digits, monkeypatch):
    """Without scikit-learn the script stops with a message saying what to install."""
    block_import(monkeypatch, "sklearn")
    with pytest.raises(SystemExit, match="scikit-learn"):
        digits.load_data()


def test_train_digits_plot_skipped_without_matplotlib(digits, monkeypatch, tmp_path, capsys):
    block_import(monkeypatch, "matplotlib")
    path = tmp_path / "loss.png"
    digits.plot({"NHWC": {"loss": [2.0, 1.0], "test_acc": [0.5]}}, str(path), "title")
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not path.exists()


# ----------------------------------------------------------------------------------------------
# examples/autodiff.py: convbp's ops as one autograd primitive

# (H, W, C_in, C_out, KH, KW, strides, padding)
AUTODIFF_CASES = [
    (5, 6, 2, 3, 3, 3, 1, "VALID"),
    (6, 7, 2, 3, 3, 3, 2, "SAME"),              # asymmetric SAME padding: 0 before, 1 after
    (7, 5, 3, 2, 3, 2, (2, 1), "SAME"),
    (6, 6, 2, 2, 2, 3, 2, ((1, 0), (2, 1))),
]


def _pads(case):
    h, w, _, _, kh, kw, strides, padding = case
    strides = (strides, strides) if isinstance(strides, int) else strides
    if padding == "VALID":
        return strides, ((0, 0), (0, 0))
    if padding == "SAME":
        return strides, tf_same_pads((h, w), (kh, kw), strides, (1, 1))
    return strides, padding


def autodiff_problem(case, layout, seed=0):
    """x, filter and a nonlinear scalar function of them through the autograd primitive."""
    h, w, c_in, c_out, kh, kw, strides, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, h, w, c_in))
    x = x.transpose(0, 3, 1, 2).copy() if layout == "NCHW" else x
    filt = rng.standard_normal((kh, kw, c_in, c_out))
    return x, filt, rng, strides, padding


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", AUTODIFF_CASES)
def test_autodiff_gradients_match_finite_differences(autodiff, case, layout):
    import autograd
    import autograd.numpy as anp
    x, filt, rng, strides, padding = autodiff_problem(case, layout)
    y_shape = autodiff.conv2d(x, filt, strides, padding, data_format=layout).shape
    weights = rng.standard_normal(y_shape)

    def f(x, filt):
        return anp.sum(anp.tanh(autodiff.conv2d(x, filt, strides, padding,
                                                data_format=layout)) * weights)

    dx, dfilt = autograd.grad(f, argnum=(0, 1))(x, filt)
    num_dx, num_dfilt = central_differences(lambda: f(x, filt), [x, filt])
    assert_fd_close(dx, num_dx)
    assert_fd_close(dfilt, num_dfilt)


@needs_torch
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", AUTODIFF_CASES)
def test_autodiff_gradients_match_torch(autodiff, case, layout):
    import autograd
    import autograd.numpy as anp
    x, filt, rng, strides, padding = autodiff_problem(case, layout)
    strides, ((top, bottom), (left, right)) = _pads(case)
    y_shape = autodiff.conv2d(x, filt, strides, padding, data_format=layout).shape
    weights = rng.standard_normal(y_shape)

    def f(x, filt):
        return anp.sum(anp.tanh(autodiff.conv2d(x, filt, strides, padding,
                                                data_format=layout)) * weights)

    dx, dfilt = autograd.grad(f, argnum=(0, 1))(x, filt)

    x_t = torch.tensor(x, requires_grad=True)
    filt_t = torch.tensor(filt, requires_grad=True)
    x_nchw = x_t.permute(0, 3, 1, 2) if layout == "NHWC" else x_t
    padded = torch.nn.functional.pad(x_nchw, (left, right, top, bottom))
    y = torch.nn.functional.conv2d(padded, filt_t.permute(3, 2, 0, 1), stride=strides)
    y = y.permute(0, 2, 3, 1) if layout == "NHWC" else y
    assert tuple(y.shape) == y_shape
    (torch.tanh(y) * torch.tensor(weights)).sum().backward()
    h, w, c_in, c_out, kh, kw = case[:6]
    assert_close(dx, x_t.grad.numpy(), np.float64, kh * kw * c_out)
    assert_close(dfilt, filt_t.grad.numpy(), np.float64, 2 * y_shape[1] * y_shape[2]
                 if layout == "NHWC" else 2 * y_shape[2] * y_shape[3])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_autodiff_example_model_gradient(autodiff, layout):
    """The example's own model: autograd's gradient vs central differences, every entry."""
    import autograd
    rng = np.random.default_rng(3)
    params = autodiff.init_params(rng, channels=(2, 3))
    params["b3"] = 0.1 * rng.standard_normal(params["b3"].shape)
    x, labels = autodiff.bars(rng, 3, size=6)
    x = autodiff.to_layout(x, layout)
    grads = autograd.grad(autodiff.loss)(params, x, labels, layout)
    names = sorted(params)
    numeric = central_differences(lambda: autodiff.loss(params, x, labels, layout),
                                  [params[k] for k in names])
    for k, g in zip(names, numeric):
        assert_fd_close(grads[k], g)


def test_autodiff_example_runs(autodiff, capsys):
    autodiff.main()
    out = capsys.readouterr().out
    assert "gradient check NHWC" in out and "gradient check NCHW" in out


def test_autodiff_float32(autodiff):
    """float32 in, float32 gradients out (autograd's float64 cotangents are narrowed), close
    to the float64 gradient of the same float32 values."""
    import autograd
    rng = np.random.default_rng(4)
    params = {k: v.astype(np.float32) for k, v in autodiff.init_params(rng).items()}
    x, labels = autodiff.bars(rng, 8)
    x = x.astype(np.float32)
    grads = autograd.grad(autodiff.loss)(params, x, labels, "NHWC")
    exact = autograd.grad(autodiff.loss)({k: v.astype(np.float64) for k, v in params.items()},
                                         x.astype(np.float64), labels, "NHWC")
    # The longest chain of sums: the dense layer (8), conv2's input gradient (3*3*8 taps) and
    # conv1's filter gradient (8 images * 64 pixels).
    for k in params:
        assert grads[k].dtype == np.float32
        assert_close(grads[k], exact[k], np.float32, 8 + 72 + 512)
