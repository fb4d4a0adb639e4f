"""The image reader (data/images.py): EXIF orientation, every odd PIL mode, crop and pad to a size; and a colour,
non-square run trained, sampled and restored through the command line."""
import numpy as np
import torch
import pytest
from PIL import Image

import diffusekit as dk
from diffusekit.data import load_data, read_samples
from diffusekit.data.images import fit, parse_size
from diffusekit.errors import DiffusekitError
from test_cli import cli, one_line_error


def pattern(h=4, w=6):
    """An RGB image whose every pixel differs: where a pixel went shows how the image was turned."""
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.arange(w)[None] * 40
    a[..., 1] = np.arange(h)[:, None] * 60
    a[..., 2] = 200
    return a


@pytest.mark.parametrize("orientation, turn", [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)),
                                               (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1)),
                                               (2, lambda a: a[:, ::-1])])
def test_exif_orientation_is_honoured(tmp_path, orientation, turn):
    a = pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(tmp_path / "photo.png", exif=exif)
    np.testing.assert_array_equal(read_samples(tmp_path / "photo.png")[0], turn(a))


def write(path, im):
    im.save(path)
    return path


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "P-transparent", "I;16", "I;16-dark", "RGBA", "CMYK", "RGB"])
def test_every_mode_reads_as_8bit_grey_or_rgb(tmp_path, mode):
    grey = np.array([[0, 64], [128, 255]], np.uint8)
    if mode == "1":
        im, want = Image.fromarray(grey >= 128), np.array([[0, 0], [255, 255]])[..., None]
    elif mode == "L":
        im, want = Image.fromarray(grey), grey[..., None]
    elif mode == "LA":  # a transparent pixel is flattened onto white
        im = Image.fromarray(np.stack([grey, np.array([[255, 255], [255, 0]], np.uint8)], -1), "LA")
        want = np.array([[0, 64], [128, 255]])[..., None]
        im.putpixel((1, 1), (0, 0))
        want[1, 1] = 255
    elif mode.startswith("P"):
        im = Image.fromarray(pattern(2, 2)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        want = np.asarray(im.convert("RGB"))
        if mode == "P-transparent":
            im.info["transparency"] = im.getpixel((0, 0))
            want = want.copy()
            want[0, 0] = 255
    elif mode.startswith("I;16"):  # 16-bit grey: scaled to 8 bits, not clipped, even when it is all dark
        v = np.array([[0, 257], [32896, 65535]], np.uint16) if mode == "I;16" else np.array([[0, 257], [514, 771]],
                                                                                             np.uint16)
        im = Image.fromarray(v)
        want = np.round(v / 65535 * 255)[..., None]
    elif mode == "RGBA":
        rgba = np.concatenate([pattern(2, 2), np.array([[[255], [0]], [[255], [128]]], np.uint8)], -1)
        im = Image.fromarray(rgba, "RGBA")
        a = rgba[..., 3:] / 255
        want = np.round(rgba[..., :3] * a + 255 * (1 - a))
    elif mode == "CMYK":  # no ink is white, full magenta and yellow is red
        im = Image.frombytes("CMYK", (2, 1), bytes([0, 0, 0, 0, 0, 255, 255, 0]))
        want = np.array([[[255, 255, 255], [255, 0, 0]]])
    else:
        im, want = Image.fromarray(pattern(2, 2)), pattern(2, 2)
    path = write(tmp_path / ("im.tif" if mode == "CMYK" else "im.png"), im)
    got = read_samples(path)[0]
    assert got.dtype == np.uint8
    np.testing.assert_allclose(got.astype(int), want, atol=1)


def test_a_folder_mixing_grey_and_colour_reads_as_colour(tmp_path):
    Image.fromarray(np.full((3, 3), 90, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(pattern(3, 3)).save(tmp_path / "b.png")
    a = read_samples(tmp_path)
    assert a.shape == (2, 3, 3, 3) and (a[0] == 90).all()


def test_fit_crops_the_centre_or_pads_with_the_border_colour():
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, 10:30] = 255  # a white centre between black sides
    im = Image.fromarray(a)
    cropped = np.asarray(fit(im, (10, 10), "crop"))  # 20 x 10 after resizing: the white centre's 10 columns
    assert cropped.shape == (10, 10, 3) and (cropped[:, 1:-1] == 255).all() and cropped.min() > 200
    padded = np.asarray(fit(im, (20, 20), "pad"))  # 20 x 10 inside, bars above and below
    assert padded.shape == (20, 20, 3)
    np.testing.assert_array_equal(padded[10], np.asarray(im.resize((20, 10), Image.BICUBIC))[5])
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean(0)
    np.testing.assert_allclose(padded[0, 0], border, atol=1)
    assert parse_size("64x48") == (48, 64) and parse_size(32) == (32, 32) and parse_size(None) is None
    for bad in ("64by48", "0x4", "4x2000", -3):
        with pytest.raises(DiffusekitError, match="image_size"):
            parse_size(bad)
    with pytest.raises(DiffusekitError, match="image_fit"):
        fit(im, (4, 4), "stretch")


def test_a_damaged_image_is_named_in_one_line(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DiffusekitError, match="cannot read image .*broken.png"):
        read_samples(tmp_path / "broken.png")


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """24 RGB images of several sizes and aspect ratios (coloured stripes), in two classes."""
    root = tmp_path_factory.mktemp("colour") / "shapes"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("warm", "cool")):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            h, w = rng.integers(20, 40), rng.integers(30, 60)
            a = np.zeros((h, w, 3), np.uint8)
            a[..., k * 2] = 200
            a[:, : w // 2, 1] = rng.integers(0, 255)
            Image.fromarray(a).save(root / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("how", ["crop", "pad"])
def test_a_folder_fits_to_a_non_square_size(colour_folder, how):
    d = load_data(str(colour_folder), "16x8", image_fit=how)
    assert tuple(d.x.shape) == (24, 3, 8, 16) and d.class_names == ["cool", "warm"]


def test_colour_non_square_run_through_the_cli(tmp_path, colour_folder, capsys):
    run = tmp_path / "run"
    assert cli("train", "--data", colour_folder, "--out", run, "--image-size", "16x8", "--image-fit", "pad",
               "--preset", "tiny", "--steps", "6", "--batch-size", "8", "--no-progress") == 0
    assert cli("sample", run, "--n", "4", "--steps", "3", "--out", tmp_path / "s.npz", "--no-progress") == 0
    s = np.load(tmp_path / "s.npz")["arr_0"]
    assert s.shape == (4, 8, 16, 3) and s.dtype == np.uint8
    r = dk.load(run)
    images = load_data(str(colour_folder), "16x8", image_fit="pad")
    assert r.inpaint(r.to_user(images.x[:2]), "box:4", steps=2).images.shape == (2, 8, 16, 3)
    assert r.upscale(r.to_user(images.x[:2, :, ::2, ::2]), 2, steps=2).images.shape == (2, 8, 16, 3)
    assert r.deblur(r.to_user(images.x[:2]), "gaussian:1", steps=2).images.shape == (2, 8, 16, 3)
    assert cli("upscale", run, "--images", tmp_path / "s.npz", "--factor", "3", "--out", tmp_path / "u.npz") != 0
    one_line_error(capsys, 1, "16x8")
    assert cli("train", "--data", colour_folder, "--out", tmp_path / "bad", "--image-size", "16x8", "--image-fit",
               "stretch", "--steps", "1") != 0
    one_line_error(capsys, 1, "--image-fit")


def test_checkpointing_gives_the_same_gradients():
    from diffusekit.model import ModelConfig, build_denoiser

    D = build_denoiser(ModelConfig(kind="image", in_shape=[3, 16, 16], preset="small", num_classes=2))
    torch.manual_seed(0)
    for w in D.net.parameters():  # zero-initialised layers would hide differences
        torch.nn.init.normal_(w, std=0.1)
    x, sigma, labels = torch.randn(4, 3, 16, 16), torch.rand(4) + 0.1, torch.tensor([0, 1, 2, 1])
    grads = []
    for on in (False, True):
        D.net.checkpointing = on
        D.net.zero_grad()
        D(x, sigma, labels).square().mean().backward()
        grads.append([p.grad.clone() for p in D.net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_presets_scale_with_the_resolution(colour_folder, tmp_path, capsys):
    from diffusekit.nets import scaled_preset

    assert scaled_preset("small", (28, 28)) == {} and scaled_preset("small", (8, 8)) == {}
    assert scaled_preset("small", (64, 64)) == {"channel_mults": [1, 2, 2, 2], "attn_resolutions": [16, 8]}
    assert scaled_preset("small", (128, 128))["channel_mults"] == [1, 2, 2, 2, 2]
    assert scaled_preset("tiny", (32, 32)) == {"channel_mults": [1, 2, 2], "attn_resolutions": []}
    assert cli("train", "--data", colour_folder, "--out", tmp_path / "run", "--image-size", "32", "--preset", "tiny",
               "--steps", 2, "--batch-size", 4, "--checkpointing", "--no-progress") == 0
    assert dk.load(tmp_path / "run").model_config.overrides["channel_mults"] == [1, 2, 2]
    assert cli("train", "--data", "toy:moons:100", "--out", tmp_path / "t", "--checkpointing", "--steps", 1) != 0
    one_line_error(capsys, 1, "--checkpointing")


def test_a_folder_too_big_for_memory_trains_read_batch_by_batch_as_one_held_in_memory(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import diffusekit.data as data

    g = np.random.default_rng(0)
    for k, cls in enumerate(["cats", "dogs"]):
        (tmp_path / "pets" / cls).mkdir(parents=True)
        for i in range(12):  # sizes and modes differ: each is fitted and made colour as the whole folder says
            h, w = 10 + i % 3, 12 + k
            a = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(a[..., 0] if i % 4 == 0 else a).save(tmp_path / "pets" / cls / f"{i}.png")
    folder = str(tmp_path / "pets")
    whole = load_data(folder, lazy=True)  # small: held in memory
    assert isinstance(whole.x, torch.Tensor)
    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)
    lazy = load_data(folder, lazy=True)
    assert isinstance(lazy.x, data.LazyImages) and lazy.x.shape == tuple(whole.x.shape) and len(lazy) == 24
    assert lazy.class_names == whole.class_names and torch.equal(lazy.labels, whole.labels)
    idx = torch.tensor([3, 17, 0, 3])
    assert torch.equal(lazy.x[idx], whole.x[idx])
    kw = dict(steps=12, preset="tiny", batch_size=8, seed=1, sample_every=0, progress=False)
    reads, getitem = [], data.LazyImages.__getitem__
    monkeypatch.setattr(data.LazyImages, "__getitem__", lambda self, i: reads.append(len(i)) or getitem(self, i))
    dk.train(folder, tmp_path / "lazy", **kw)
    assert reads == [8] * 12  # one batch read per step
    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 2 << 30)
    dk.train(folder, tmp_path / "held", **kw)
    a, b = (load_file(tmp_path / run / "last" / "model.safetensors") for run in ("lazy", "held"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (tmp_path / "pets" / "dogs" / "bad.png").write_text("not an image")
    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)
    with pytest.raises(DiffusekitError, match="cannot read image .*bad.png"):
        load_data(folder, lazy=True)
