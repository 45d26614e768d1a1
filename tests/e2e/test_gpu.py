"""The CUDA path: the same loader, recipe and weights as on the CPU. Skipped without a GPU."""
from __future__ import annotations

import pytest
import torch

import tudui
from tudui.data import TensorLoader
from tudui.engine.hooks import Hooks
from tudui.engine.loop import TrainStep, train_one_epoch
from tudui.models import create_model
from tudui.runtime import Runtime

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_tensor_loader_gives_the_same_batches_on_cuda_as_on_the_cpu():
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(300) % 10
    kwargs = dict(batch_size=64, shuffle=True, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2),
                  augment="crop-alt-flip", seed=5, translate=2)
    cpu = TensorLoader(images, labels, device="cpu", **kwargs)
    gpu = TensorLoader(images, labels, device="cuda", **kwargs)
    for epoch in (0, 1):
        cpu.set_epoch(epoch)
        gpu.set_epoch(epoch)
        for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(cpu, gpu, strict=True):
            assert x_gpu.is_cuda and torch.equal(y_gpu.cpu(), y_cpu)
            torch.testing.assert_close(x_gpu.cpu(), x_cpu)
    # progressive resizing: uint8 on the CPU, float then rounded on CUDA, the same pixels within a level
    for loader in (cpu, gpu):
        loader.set_size(24)
    for (x_cpu, _), (x_gpu, _) in zip(cpu, gpu, strict=True):
        assert x_gpu.shape == x_cpu.shape and x_cpu.shape[-2:] == (24, 24)
        assert (x_gpu.cpu() - x_cpu).abs().max() <= 1.0 / 255 / 0.2 + 1e-5   # one level over the std


def test_bf16_training_on_cuda_gives_finite_losses_near_fp32():
    torch.manual_seed(0)
    model = create_model("fastnet", num_classes=10, widths="16,32,32").cuda()
    model.init_whitening(torch.randn(256, 3, 32, 32, device="cuda"))
    inputs, targets = torch.randn(64, 3, 32, 32, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    loss_fn = torch.nn.CrossEntropyLoss()
    with torch.no_grad():
        full = loss_fn(model(inputs), targets)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = loss_fn(model(inputs), targets)
    assert torch.isfinite(half) and half.item() == pytest.approx(full.item(), rel=0.05)


def test_losses_read_back_once_per_window_on_cuda_still_reach_every_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).cuda()
    batches = [(torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,))) for _ in range(10)]
    seen = []

    class Listener:
        def on_step(self, loss, n, lr):
            seen.append(loss)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model=model, loss_fn=torch.nn.CrossEntropyLoss(reduction="none"), optimizer=optimizer,
                     scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                     runtime=Runtime(device=torch.device("cuda")))
    result = train_one_epoch(step, batches, Hooks([Listener()]))
    assert len(seen) == 10 and result["images"] == 80
    assert result["loss"] == pytest.approx(sum(seen) / 10)


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_the_fast_recipe_learns_on_cuda_and_its_weights_load_on_the_cpu(tmp_path, precision):
    from helpers import REPO
    result = tudui.train(config_file=REPO / "configs" / "cifar10-fast.yaml", data="digits",
                         widths="16,32,32", epochs=4, batch_size=128, augment="crop", device="cuda",
                         precision=precision, project=str(tmp_path), progress=False)
    assert result.test_accuracy >= 0.6                        # chance: 10 %
    on_cpu = tudui.evaluate(result.last_weights, device="cpu")
    assert on_cpu["accuracy"] == pytest.approx(result.test_accuracy, abs=0.02)
