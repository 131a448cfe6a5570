#!/usr/bin/python3
"""ONNX models of DINOv2 ViT-S/14 and DINOv3 ViT-S/16 with seeded random weights, for the
webdino / ONNX Runtime comparison of bench/compare/ort/run.sh.

    /usr/bin/python3 bench/compare/ort/export_onnx.py OUT_DIR [--batch 8] [--size 224] [--only NAME]

Writes, per model (OUT_DIR/dinov2_vits14, OUT_DIR/dinov3_vits16):
    model.onnx           forward_features(x) → (x_norm_clstoken (B, D), x_norm_patchtokens (B, hw, D)),
                         opset 17, batch and size fixed (constant-folded position embedding / RoPE)
    weights.safetensors  the same weights in the released flat layout (what webdino loads)
    x.npy                the input batch (B, 3, S, S), float32, N(0, 1)
    torch_cls.npy, torch_patch.npy   PyTorch's outputs on x (the reference of the agreement check)

The model is the OFFICIAL code (facebookresearch/dinov2, /dinov3 at the commits pinned in
test/fixtures/models/dinov2_dinov3/make_fixtures.py), read at run time from the bare git mirrors
and never stored here; this script reuses that fixture script's helpers (the torch-1.13 shims,
`git archive` import, the hub's constructor recipe, the seeded randomisation), so the models are
the hub's `dinov2_vits14` / `dinov3_vits16` at full size. Needs Debian's python3-torch 1.13 and
numpy; nothing is downloaded.
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import warnings
from collections import OrderedDict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "..", "test", "fixtures", "models", "dinov2_dinov3", "make_fixtures.py")


def load_fixture_helpers():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Features(torch.nn.Module):
    """forward_features as a two-output graph (the dict of the official code is not exportable)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model.forward_features(x)
        return out["x_norm_clstoken"], out["x_norm_patchtokens"]


def tile_symbolic(g, self, dims):
    """aten::tile (DINOv3's RoPE: angles.tile(2)), which torch 1.13's exporter lacks: ONNX Tile
    with the repeats left-padded with 1 to the input's rank, as torch.tile pads them."""
    from torch.onnx import symbolic_helper as sh
    reps = list(sh._get_const(dims, "is", "dims"))
    rank = sh._get_tensor_rank(self)
    if rank is None or len(reps) > rank:
        raise NotImplementedError("tile: input rank unknown or below len(dims)")
    reps = [1] * (rank - len(reps)) + reps
    return g.op("Tile", self, g.op("Constant", value_t=torch.tensor(reps, dtype=torch.int64)))


def export(mf, name, family, vits, hub, seed, batch, size, out):
    gen = torch.Generator().manual_seed(seed)
    recipe = mf.hub_kwargs(vits, hub, name)
    model = vits.DinoVisionTransformer(**recipe)
    if family == "dinov3":
        model.init_weights()  # bias_mask, RoPE periods, LayerScale (what the hub does without weights)
    mf.randomise(model, gen)
    model.eval()
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    sd = OrderedDict((k, v.detach().clone().contiguous()) for k, v in model.state_dict().items())
    mf.write_safetensors(os.path.join(folder, "weights.safetensors"), sd)

    x = torch.randn(batch, 3, size, size, generator=gen)
    np.save(os.path.join(folder, "x.npy"), x.numpy().astype(np.float32))
    wrapped = Features(model).eval()
    with torch.no_grad():
        cls, patch = wrapped(x)
    mf.ATTENTION_PROBS.clear()
    np.save(os.path.join(folder, "torch_cls.npy"), cls.numpy())
    np.save(os.path.join(folder, "torch_patch.npy"), patch.numpy())
    with torch.no_grad():
        torch.onnx.export(wrapped, (x,), os.path.join(folder, "model.onnx"), opset_version=17,
                          input_names=["x"], output_names=["cls", "patch"], do_constant_folding=True)
    mf.ATTENTION_PROBS.clear()
    print(f"{name}: {sum(v.numel() for v in sd.values()) / 1e6:.1f}M values, cls {tuple(cls.shape)}, "
          f"patch {tuple(patch.shape)} -> {folder}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--only", choices=["dinov2_vits14", "dinov3_vits16"])
    args = ap.parse_args()
    mf = load_fixture_helpers()
    mf.install_torch2_shims()
    torch.set_default_dtype(torch.float32)
    torch.onnx.register_custom_op_symbolic("aten::tile", tile_symbolic, 17)
    with tempfile.TemporaryDirectory() as tmp:
        mf.import_official(mf.DINOV2, os.path.join(tmp, "v2"))
        mf.import_official(mf.DINOV3, os.path.join(tmp, "v3"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # xFormers-not-available notices, tracer warnings
            from dinov2.models import vision_transformer as v2_vits
            from dinov2.hub import backbones as v2_hub
            from dinov3.models import vision_transformer as v3_vits
            from dinov3.hub import backbones as v3_hub
            if not args.only or args.only == "dinov2_vits14":
                export(mf, "dinov2_vits14", "dinov2", v2_vits, v2_hub, 21, args.batch, args.size, args.out)
            if not args.only or args.only == "dinov3_vits16":
                export(mf, "dinov3_vits16", "dinov3", v3_vits, v3_hub, 22, args.batch, args.size, args.out)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
