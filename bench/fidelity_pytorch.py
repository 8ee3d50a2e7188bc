#!/usr/bin/env python3
"""Plain-PyTorch replay of one trial of the Rust trainer, for the fidelity
test (worker/tests/fidelity.rs) and the depth-32 study (docs/fidelity.md).

Input: one or more JSON manifests (`--manifest M1 --manifest M2 ...`, run in
turn in one process, so torch is imported once), written by the Rust side:

    {"depth": 8, "skip": true, "batchnorm": true,
     "optimizer": "sgd" | "adam", "lr": 0.01, "momentum": 0.9,
     "weight_decay": 5e-4, "batch_size": 8, "threads": 1,
     "data": "<folder with data_batch_*.bin>", "train_subset": 64,
     "init": "<init.safetensors>",            # the trainer's exact initial weights
     "permutations": [[...], [...]],          # training-image order, one list per epoch
     "max_steps": null,                       # optional: stop after this many steps
     "override": {"momentum": 0.85},          # optional: a deliberate change (the
                                              # test's check that it can see one)
     "losses_out": "<losses.json>", "weights_out": "<final.safetensors>" | null}

It builds the same network as bench/bmenet_pytorch.py, loads the initial
weights (tch names `block01.conv1.weight` map to `blocks.0.conv1.weight`;
every parameter and BN buffer must be present, nothing extra), trains with
torch.optim.SGD (dampening 0, no Nesterov) or torch.optim.Adam (betas 0.9,
0.999, eps 1e-8, L2 weight decay), cross-entropy, batches taken in exactly
the given order (last batch of an epoch may be short), no augmentation, and
writes the loss of every step (float32 loss widened to float64, like the
trainer's `train_loss` with log_every = 1) and the final weights under the
tch names (safetensors, which tch reads with Tensor::read_safetensors).

No numpy or safetensors package is needed: the safetensors format (an
8-byte little-endian header length, a JSON header, raw little-endian data)
is read and written here directly.
"""
import argparse
import ctypes
import json
import math
import os
import re
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bmenet_pytorch import BMEnet, load_train  # noqa: E402

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
NAMES = {v: k for k, v in DTYPES.items()}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise SystemExit(f"{path}: tensor {name}: unsupported dtype {info['dtype']}")
        lo, hi = info["data_offsets"]
        dt = DTYPES[info["dtype"]]
        if hi > lo:
            t = torch.frombuffer(bytearray(raw[base + lo:base + hi]), dtype=dt)
        else:
            t = torch.empty(0, dtype=dt)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def write_safetensors(tensors, path):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        size = t.numel() * t.element_size()
        blobs.append(ctypes.string_at(t.data_ptr(), size) if size else b"")
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def tch_to_torch(name):
    m = re.match(r"^block(\d+)\.(.*)$", name)
    return f"blocks.{int(m.group(1)) - 1}.{m.group(2)}" if m else name


def torch_to_tch(name, width):
    m = re.match(r"^blocks\.(\d+)\.(.*)$", name)
    return f"block{int(m.group(1)) + 1:0{width}d}.{m.group(2)}" if m else name


def load_init(net, path):
    """Copies the trainer's initial weights into `net`; returns the tch-name
    width of block numbers (for writing the final weights back)."""
    init = read_safetensors(path)
    sd = net.state_dict()
    wanted = {k for k in sd if not k.endswith("num_batches_tracked")}
    width = 2
    got = set()
    for name, t in init.items():
        m = re.match(r"^block(\d+)\.", name)
        if m:
            width = len(m.group(1))
        key = tch_to_torch(name)
        if key not in wanted:
            raise SystemExit(f"{path}: tensor {name} ({key}) has no place in the PyTorch BMEnet")
        if tuple(sd[key].shape) != tuple(t.shape):
            raise SystemExit(f"{path}: {name}: shape {tuple(t.shape)}, PyTorch has {tuple(sd[key].shape)}")
        got.add(key)
    missing = sorted(wanted - got)
    if missing:
        raise SystemExit(f"{path}: lacks {len(missing)} tensors, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, t in init.items():
            sd[tch_to_torch(name)].copy_(t)
    return width


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, action="append",
                    help="a replay to run; repeat for several in one process")
    a = ap.parse_args()
    for path in a.manifest:
        replay(path)


def replay(path):
    with open(path) as f:
        m = json.load(f)
    m.update(m.get("override") or {})
    torch.set_num_threads(int(m.get("threads") or 1))
    images, labels = load_train(m["data"], int(m["train_subset"]))
    n = images.shape[0]
    net = BMEnet(int(m["depth"]), bool(m["skip"]), bool(m["batchnorm"]))
    width = load_init(net, m["init"])
    net.train()
    if m["optimizer"] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=m["lr"], momentum=m["momentum"],
                              weight_decay=m["weight_decay"])
    elif m["optimizer"] == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=m["lr"], betas=(0.9, 0.999), eps=1e-8,
                               weight_decay=m["weight_decay"])
    else:
        raise SystemExit(f"unknown optimizer {m['optimizer']!r}")
    bs = int(m["batch_size"])
    max_steps = m.get("max_steps")
    losses = []
    done = False
    for perm in m["permutations"]:
        if sorted(perm) != list(range(n)):
            raise SystemExit(f"a permutation is not of 0..{n}")
        perm = torch.tensor(perm, dtype=torch.long)
        for lo in range(0, n, bs):
            idx = perm[lo:lo + bs]
            x = images[idx].float().div_(255.0).sub_(0.5).div_(0.5)
            y = labels[idx]
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            v = loss.item()
            losses.append(v if math.isfinite(v) else None)
            opt.step()
            if max_steps is not None and len(losses) >= max_steps:
                done = True
                break
        if done:
            break
    with open(m["losses_out"] + ".tmp", "w") as f:
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(),
                   "losses": losses}, f)
    os.replace(m["losses_out"] + ".tmp", m["losses_out"])
    if m.get("weights_out"):
        out = {torch_to_tch(k, width): v for k, v in net.state_dict().items()
               if not k.endswith("num_batches_tracked")}
        write_safetensors(out, m["weights_out"])


if __name__ == "__main__":
    main()
