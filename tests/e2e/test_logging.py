"""What a run reports: TensorBoard events read back, the CSV, the progress lines."""
import csv

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_tensorboard_events_hold_the_scalars_and_the_image_grid(digits_run):
    events = EventAccumulator(str(digits_run.run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/epoch_loss", "train/epoch_lr", "hparam/accuracy"} <= scalars
    assert not {tag for tag in scalars if tag.startswith(("val/", "test/"))}   # digits: no val split
    assert "lr" not in scalars                   # one section for the learning rate, as for the loss
    assert len(events.Scalars("train/epoch_lr")) == 10 and events.Scalars("hparam/accuracy")[-1].value >= 0.9
    assert len(events.Scalars("train/loss")) == 10 * 23 // 20   # every 20 steps, 23 steps an epoch
    image = events.Images("train/images")[0]
    assert image.width > 32 and image.height > 32 and image.encoded_image_string[:4] == b"\x89PNG"


def test_metrics_csv_has_a_row_per_epoch_matching_the_printed_lines(digits_run):
    rows = list(csv.DictReader((digits_run.run_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    printed = [line for line in digits_run.stdout.splitlines() if line.startswith("epoch")]
    for row, line in zip(rows, printed):
        assert f"train_loss {float(row['train_loss']):.4f}" in line and "(no val split)" in line
        assert row["val_accuracy"] == row["val_loss"] == ""
    assert float(rows[0]["lr"]) == 0.01 and float(rows[-1]["lr"]) < 0.001
