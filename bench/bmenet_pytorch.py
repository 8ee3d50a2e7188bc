#!/usr/bin/env python3
"""Plain-PyTorch BMEnet training speed, the reference for bench/train_speed.sh.

The same network as worker/src/torch/bmenet.rs (issue 3's BMEnet: stem,
4 sections of depth/8 SkipBlocks, downsampling blocks whose 1x1 stride-2 conv
is applied to both paths, a 64->128 block with conv1/bn1 only whose skip adds
the identity to both channel halves, fc 2048->1000->10, out-of-place skip
additions) and the same settings as the Rust trainer's benchmark run: first
N CIFAR-10 training images, pixels /255 then normalised with mean 0.5 and
std 0.5 per batch from bytes, cross-entropy, SGD lr 1e-4 momentum 0.9,
shuffled every epoch, no augmentation, PyTorch's default initialisation.

Runs --epochs epochs (default 2, the first is warm-up) and prints the last
epoch's training images/second as one JSON line. Only the training batches
are timed, like the Rust side's images_per_sec metric. No numpy or
torchvision needed.
"""
import argparse
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

RECORD = 3073
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]


class SkipBlock(nn.Module):
    def __init__(self, in_ch, out_ch, downsample=False, skip=True, batchnorm=True):
        super().__init__()
        self.in_ch, self.out_ch, self.skip = in_ch, out_ch, skip
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(out_ch) if batchnorm else None
        if in_ch == out_ch:
            self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1)
            self.bn2 = nn.BatchNorm2d(out_ch) if batchnorm else None
        self.downsampler = nn.Conv2d(in_ch, out_ch, 1, stride=2) if downsample else None

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        if self.bn1 is not None:
            out = self.bn1(out)
        out = F.relu(out)
        if self.in_ch == self.out_ch:
            out = self.conv2(out)
            if self.bn2 is not None:
                out = self.bn2(out)
            out = F.relu(out)
        if self.downsampler is not None:
            out = self.downsampler(out)
            if self.skip:
                identity = self.downsampler(identity)
        if not self.skip:
            return out
        if self.in_ch == self.out_ch:
            return out + identity
        c = self.in_ch
        return torch.cat([out[:, :c] + identity, out[:, c:] + identity], dim=1)


class BMEnet(nn.Module):
    def __init__(self, depth=32, skip=True, batchnorm=True):
        super().__init__()
        assert depth > 0 and depth % 8 == 0
        n = depth // 8
        B = lambda i, o, ds=False: SkipBlock(i, o, ds, skip, batchnorm)
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        blocks = [B(64, 64) for _ in range(n)] + [B(64, 64, True)]
        blocks += [B(64, 64) for _ in range(n)] + [B(64, 128)]
        blocks += [B(128, 128) for _ in range(n)] + [B(128, 128, True)]
        blocks += [B(128, 128) for _ in range(n)]
        self.blocks = nn.Sequential(*blocks)
        self.fc1 = nn.Linear(2048, 1000)
        self.fc2 = nn.Linear(1000, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 2)
        x = self.blocks(x)
        x = x.reshape(-1, 2048)
        return self.fc2(F.relu(self.fc1(x)))


def load_train(root, n):
    chunks, have = [], 0
    for name in TRAIN_FILES:
        if have >= n:
            break
        with open(os.path.join(root, name), "rb") as f:
            raw = f.read((n - have) * RECORD)
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, RECORD)
        chunks.append(t)
        have += t.shape[0]
    recs = torch.cat(chunks)[:n]
    labels = recs[:, 0].long()
    images = recs[:, 1:].reshape(-1, 3, 32, 32).contiguous()
    return images, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--data", required=True, help="folder with data_batch_*.bin")
    ap.add_argument("--no-skip", action="store_true")
    ap.add_argument("--no-batchnorm", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    # Its own best settings on a GPU: cuDNN picks the fastest kernels, and
    # the data sits on the device (batches are gathered there).
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    torch.manual_seed(1)
    images, labels = load_train(a.data, a.images)
    images, labels = images.to(dev), labels.to(dev)
    n = images.shape[0]
    net = BMEnet(a.depth, not a.no_skip, not a.no_batchnorm).to(dev)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    per_epoch = []
    for epoch in range(a.epochs):
        perm = torch.randperm(n, device=dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for lo in range(0, n, a.batch):
            idx = perm[lo:lo + a.batch]
            x = images[idx].float().div_(255.0).sub_(0.5).div_(0.5)
            y = labels[idx]
            opt.zero_grad()
            loss = crit(net(x), y)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        per_epoch.append(n / (time.perf_counter() - t0))
    print(json.dumps({
        "impl": "pytorch", "depth": a.depth, "batch": a.batch, "images": n,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "device": a.device,
        "images_per_sec": round(per_epoch[-1], 2),
        "per_epoch": [round(v, 2) for v in per_epoch],
    }))


if __name__ == "__main__":
    main()
