"""An MNIST-like classifier trained by sweep's exec trainer.

The data is made on the fly (no download): 10 classes of 8x8 "digits",
each a fixed random stroke pattern plus per-image noise and shifts, the
same for every trial (data seed 1234); the trial's seed sets the network's
initialisation and the batch order. A hidden layer of `--hidden` units
(0: a linear softmax classifier) is trained with SGD at `--lr`.

Run by hand:  python train.py --lr 0.1 --hidden 32
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import sweep_trial  # noqa: E402


def make_data(n, generator):
    prototypes = (torch.rand(10, 8, 8, generator=torch.Generator().manual_seed(1234)) > 0.6).float()
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = prototypes[labels]
    shifts = torch.randint(-1, 2, (n, 2), generator=generator)
    images = torch.stack([torch.roll(img, (int(dx), int(dy)), (0, 1)) for img, (dx, dy) in zip(images, shifts)])
    images = images + 0.8 * torch.randn(images.shape, generator=generator)
    return images.reshape(n, 64), labels


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=0)
    args = parser.parse_args()
    trial = sweep_trial.Trial()
    epochs = int(trial.settings.get("epochs", 3))
    samples = int(trial.settings.get("samples", 2048))
    batch = int(trial.settings.get("batch_size", 32))
    torch.set_num_threads(1)

    data_gen = torch.Generator().manual_seed(1234)
    x_train, y_train = make_data(samples, data_gen)
    x_test, y_test = make_data(1024, data_gen)
    torch.manual_seed(trial.seed)
    if args.hidden > 0:
        model = torch.nn.Sequential(torch.nn.Linear(64, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 10))
    else:
        model = torch.nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    steps_per_epoch = samples // batch
    step = 0
    if trial.resume_step is not None:
        state = torch.load(trial.checkpoint_path(trial.resume_step), weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = trial.resume_step
        print(f"resumed at step {step}")
    def evaluate():
        with torch.no_grad():
            out = model(x_test)
            return torch.nn.functional.cross_entropy(out, y_test).item(), (out.argmax(1) == y_test).float().mean().item()

    train_loss = None
    first_epoch, first_batch = divmod(step, steps_per_epoch)
    for epoch in range(first_epoch, epochs):
        # Each epoch's order from (seed, epoch): a resumed run draws the same.
        perm = torch.randperm(samples, generator=torch.Generator().manual_seed(trial.seed * 1000 + epoch))
        total = 0.0
        start = first_batch if epoch == first_epoch else 0
        for i in range(start, steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            total += loss.item()
            if step % 16 == 0:
                trial.log(step=step, epoch=epoch + 1, train_loss=total / (i + 1 - start))
            if trial.should_stop:
                break
        test_loss, accuracy = evaluate()
        train_loss = total / max(1, i + 1 - start)
        trial.log(step=step, epoch=epoch + 1, test_loss=test_loss, test_accuracy=accuracy)
        print(f"epoch {epoch + 1}: train loss {total / max(1, i + 1 - start):.4f}, test accuracy {accuracy:.3f}")
        if trial.checkpoint(step):
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, trial.checkpoint_path(step))
            trial.checkpointed(step)
        if trial.should_stop:
            print("stopping on SIGTERM; the checkpoint is written")
            return
    # Resumed after the last epoch's checkpoint, nothing was trained: the
    # final values are measured on the restored weights.
    test_loss, accuracy = evaluate()
    finals = {"test_accuracy": accuracy, "test_loss": test_loss}
    if train_loss is not None:
        finals["train_loss"] = train_loss
    trial.final(**finals)


if __name__ == "__main__":
    main()
