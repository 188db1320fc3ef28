"""evaluate_polymnist wiring: a perfect generator scores coherence 1 and SSIM 1, a generator that
ignores its input scores chance; every subset is generated and judged."""

import torch
from torch import nn

from pyro_mcvae.evaluate import evaluate_polymnist, generate_images

M, SHAPE = 3, (3, 28, 28)


def digit_image(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Modality k of digit y: a bright bar at row 2y + 4 (plus k), dark elsewhere. ``(n, 3, 28, 28)``."""
    x = torch.full((labels.shape[0], *SHAPE), 0.1)
    x[torch.arange(labels.shape[0]), :, 2 * labels + 4 + k] = 0.9
    return x


def read_label(images: torch.Tensor, k: int) -> torch.Tensor:
    return (images[:, 0].mean(-1).argmax(-1) - 4 - k) // 2


class BarJudge(nn.Module):
    """A digit classifier for modality k that reads the bar."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return nn.functional.one_hot(read_label(x, self.k).clamp(0, 9), 10).float()

    def features(self, x):
        return x[:, 0].mean(-1)  # the row profile, (B, 28)


class FakeModel:
    """Reads the digit from any observed modality and draws every modality of that digit;
    ``broken`` ignores the input and draws digit 0."""

    def __init__(self, broken=False):
        self.broken = broken

    def eval(self):
        return self

    def sample(self, n):
        labels = torch.arange(n) % 10
        return [digit_image(labels, k).flatten(1) for k in range(M)]

    def condition(self, observed, num_samples=1):
        k, x = next(iter(observed.items()))
        labels = read_label(x.reshape(-1, *SHAPE), k)
        if self.broken:
            labels = torch.zeros_like(labels)
        return [digit_image(labels, j).flatten(1)[None] for j in range(M)]


def test_perfect_and_broken_generators():
    labels = torch.arange(40) % 10
    images = torch.stack([digit_image(labels, k) for k in range(M)], 1)
    judges = [BarJudge(k) for k in range(M)]
    good = evaluate_polymnist(FakeModel(), images, labels, judges)
    assert len(good["conditional_coherence"]["subsets"]) == 2 ** M - 2
    assert good["conditional_coherence"]["mean"] == 1.0
    assert good["conditional_coherence"]["by_size"] == {1: 1.0, 2: 1.0}
    assert good["unconditional_coherence"] == 1.0
    assert abs(good["ssim"]["mean"] - 1.0) < 1e-9
    assert good["digit_fd"]["unconditional"] < 0.05
    bad = evaluate_polymnist(FakeModel(broken=True), images, labels, judges)
    assert abs(bad["conditional_coherence"]["mean"] - 0.1) < 1e-9  # only the zeros are right
    assert bad["ssim"]["mean"] < 0.9
    assert bad["digit_fd"]["conditional"] > 10 * good["digit_fd"]["conditional"] + 0.1


def test_generate_images_keeps_the_observed_slots():
    labels = torch.arange(12) % 10
    images = torch.stack([digit_image(labels, k) for k in range(M)], 1)
    gen = generate_images(FakeModel(broken=True), images, subsets=[(1,), (0, 2)], num_unconditional=5,
                          batch_size=5)
    assert gen["unconditional"].shape == (5, M, *SHAPE)
    assert set(gen["conditional"]) == {(1,), (0, 2)}
    for subset, g in gen["conditional"].items():
        assert g.shape == images.shape


class HalfBrokenModel(FakeModel):
    """Right when conditioned on modality 0, digit 0 otherwise: subsets differ."""

    def condition(self, observed, num_samples=1):
        self.broken = 0 not in observed
        return super().condition(observed, num_samples)


def test_streamed_evaluation_under_several_judges_equals_the_full_one():
    from pyro_mcvae.evaluate import evaluate_polymnist_judges

    labels = torch.arange(30) % 10
    images = torch.stack([digit_image(labels, k) for k in range(M)], 1)
    judges = {"a": [BarJudge(k) for k in range(M)], "b": [BarJudge(k) for k in range(M)]}
    full = evaluate_polymnist(HalfBrokenModel(), images, labels, judges["a"])
    streamed, generated = evaluate_polymnist_judges(HalfBrokenModel(), images, labels, judges)
    assert set(streamed) == {"a", "b"}
    for name in judges:
        assert streamed[name]["conditional_coherence"] == full["conditional_coherence"]
        assert streamed[name]["ssim"] == full["ssim"]
        assert streamed[name]["digit_fd"] == full["digit_fd"]
    # Only the single-source generations are kept.
    assert set(generated["conditional"]) == {(k,) for k in range(M)}
    assert 0.1 < full["conditional_coherence"]["mean"] < 1.0
