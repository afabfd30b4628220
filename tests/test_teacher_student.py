"""Teacher/student clients, two-view transfer sets and device handling, on the Learner
(the client code the ClientApp wraps) without Flower."""

import numpy as np
import pytest
import torch

from fedkt.config import load_config
from fedkt.data.federation import federation_for
from fedkt.data.views import augmented_view
from fedkt.errors import ConfigError
from fedkt.experiment import resolve
from fedkt.learner import Learner
from fedkt.training import predict, resolve_device, train_supervised

SMALL = [
    "num_clients=4",
    "transfer.size=40",
    "train.epochs=1",
    "distill.epochs=1",
    "evaluation.client_test_size=30",
    "evaluation.global_test_size=40",
]
TIERS = (
    "model.tiers=[{name: cnn-small, fraction: 0.5}, {name: mlp, fraction: 0.5, student: cnn-small}]"
)


def _cfg(*overrides: str):
    return load_config(None, [*SMALL, *overrides])


def _params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def test_students_are_assigned_per_tier():
    cfg = _cfg(TIERS, "model.student=mlp")
    assert cfg.architecture_names() == ["cnn-small", "cnn-small", "mlp", "mlp"]
    assert cfg.student_names() == ["mlp", "mlp", "cnn-small", "cnn-small"]
    assert cfg.evaluated_model == "student"
    assert _cfg().evaluated_model == "teacher" and _cfg().student_names() == [None] * 4
    assert _cfg("model.student=mlp", "model.evaluates=teacher").evaluated_model == "teacher"


def test_teacher_teaches_student_and_fused_knowledge_reaches_the_student():
    cfg = _cfg("model.name=cnn-small", "model.student=mlp")
    lr = Learner(resolve(cfg), 0)
    assert (
        lr.description == "cnn-small>mlp"
        and lr.receiving_model is lr.student
        and lr.shared_model is lr.model
    )
    teacher0, student0 = _params(lr.model), _params(lr.student)
    metrics = lr.train(1)
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["student_train_loss"])
    teacher1, student1 = _params(lr.model), _params(lr.student)
    assert not torch.equal(teacher0, teacher1) and not torch.equal(student0, student1)
    # knowledge comes from the shared model (the teacher by default)
    values, _ = lr.knowledge(1)
    np.testing.assert_allclose(
        values, torch.softmax(predict(lr.model, lr.data.transfer_x), -1).numpy(), atol=1e-6
    )
    # the fused target is distilled into the student only
    target = np.full_like(values, 1.0 / values.shape[1])
    lr.finetune(target, 1)
    assert torch.equal(_params(lr.model), teacher1) and not torch.equal(
        _params(lr.student), student1
    )
    ev = lr.evaluate()
    assert ev["accuracy"] == ev["student_accuracy"] and "teacher_accuracy" in ev


def test_student_knowledge_and_teacher_evaluation_when_configured():
    lr = Learner(
        resolve(_cfg("model.student=mlp", "model.shares=student", "model.evaluates=teacher")), 1
    )
    lr.train(1)
    values, _ = lr.knowledge(1)
    np.testing.assert_allclose(
        values, torch.softmax(predict(lr.student, lr.data.transfer_x), -1).numpy(), atol=1e-6
    )
    ev = lr.evaluate()
    assert ev["accuracy"] == ev["teacher_accuracy"]


def test_state_round_trip_keeps_both_models():
    cfg = _cfg(
        "model.name=cnn-small",
        "model.student=mlp",
        "model.student_loss=gt_weighted",
        "model.student_loss_params.alpha=auto",
    )
    lr = Learner(resolve(cfg), 2)
    lr.train(1)
    state = lr.state_dict()
    assert any(k.startswith("student.") for k in state) and any(
        not k.startswith("student.") for k in state
    )
    again = Learner(resolve(cfg), 2, state)
    x = lr.data.test_x
    assert torch.equal(predict(again.model, x), predict(lr.model, x))
    assert torch.equal(predict(again.student, x), predict(lr.student, x))


def test_second_view_is_seeded_shifted_and_noisy():
    x = torch.zeros(3, 1, 8, 8)
    x[:, :, 4, 4] = 10.0
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    a, b = augmented_view(x, g()), augmented_view(x, g())
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    clean = augmented_view(x, g(), noise=0.0)
    for img in clean:  # the bright pixel moved by at most two pixels each way, nothing else changed
        ((row, col),) = (img[0] == 10.0).nonzero().tolist()
        assert abs(row - 4) <= 2 and abs(col - 4) <= 2 and (img[0] == 0).sum() == 63


def test_two_views_double_the_transfer_rows():
    cfg = _cfg("transfer.views=2", "transfer.labelled=true", "strategy.fusion=sade")
    x, y = federation_for(cfg).transfer_tensors()
    assert len(x) == 80 and torch.equal(y[:40], y[40:]) and not torch.equal(x[:40], x[40:])
    single, _ = federation_for(_cfg()).transfer_tensors()
    assert torch.equal(x[:40], single)
    fedmd = resolve(
        load_config(
            None, [*SMALL, "strategy=fedmd", "transfer.views=2", "strategy.params.subset=10"]
        )
    )
    rows = fedmd.transfer_indices(1)
    assert len(rows) == 20 and np.array_equal(rows[10:], rows[:10] + 40)
    lr = Learner(resolve(cfg), 0)
    assert lr.knowledge(1)[0].shape == (80, 10)


def test_device_choices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(
            ConfigError, match="device: 'cuda' was asked for but torch sees no CUDA GPU"
        ):
            resolve_device("cuda")


def test_gpu_share_defaults():
    from fedkt.server.simulation import AUTO_GPU_SHARE, gpu_share

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert gpu_share(_cfg(), cpu) == 0.0 and gpu_share(_cfg(), cuda) == AUTO_GPU_SHARE
    assert gpu_share(_cfg("simulation.num_gpus_per_client=0.5"), cuda) == 0.5
    with pytest.raises(ConfigError, match="num_gpus_per_client: 0 leaves"):
        gpu_share(_cfg("simulation.num_gpus_per_client=0"), cuda)


def test_mixed_precision_trains_on_cpu():
    cfg = _cfg("train.amp=true")
    lr = Learner(resolve(cfg), 0)
    start = _params(lr.model)
    loss = train_supervised(
        lr.model, lr.data.train_x, lr.data.train_y, cfg.train, torch.Generator().manual_seed(0)
    )
    assert np.isfinite(loss.loss) and loss.steps > 0 and not torch.equal(start, _params(lr.model))
    assert all(
        p.dtype == torch.float32 for p in lr.model.parameters()
    )  # autocast keeps master weights fp32
