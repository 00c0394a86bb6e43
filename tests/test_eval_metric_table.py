"""pipelines.evaluation.metric_table: every score's direction, and the names the networks give scores."""

from __future__ import annotations

import pytest
import torch

from datasets.synthetic.figure_render import GARMENTS
from datasets.synthetic.portrait_groundtruth import PORTRAIT_REGIONS
from datasets.synthetic.portrait_true_edits import TRUE_EDITS
from model.metrics import InceptionFID, LpipsVGG, ModuleFeatures
from pipelines.evaluation import metric_table
from pipelines.evaluation.lpips_alex import LpipsAlex
from pipelines.evaluation.metric_table import (
    HIGHER,
    LOWER,
    UnknownMetric,
    arrow,
    direction,
    lookup,
    lower_is_better,
)
from pipelines.evaluation.networks import metric_names

# What the default pipeline (dvc.yaml on synthetic_fashion: EfficientNet-Lite1 features, no FID or
# LPIPS weights, model.flow_scales [8, 4, 2], attn_scales [8, 4]) writes for each method, and which
# way each is better.  A changed direction here changes promotion, cards and the ablation table.
DEFAULT_PIPELINE = {
    "ssim": HIGHER,
    "ssim_range255": HIGHER,
    "psnr": HIGHER,
    "fd_effnet_lite1": LOWER,
    "kid_effnet_lite1": LOWER,
    "lpd_effnet_lite1": LOWER,
    "flow_epe": LOWER,
    "flow_epe_s2": LOWER,
    "flow_epe_s4": LOWER,
    "flow_epe_s8": LOWER,
    "attn_epe_s4": LOWER,
    "attn_epe_s8": LOWER,
    "branch_choice_s4": HIGHER,
    "branch_choice_s8": HIGHER,
    "appearance_de00": LOWER,
    **{f"appearance_de00_{garment}": LOWER for garment in GARMENTS[1:]},
}
# The other datasets and configurations: Market layouts (masked), portraits, the field's networks.
OTHER_CONFIGURATIONS = {
    "masked_ssim": HIGHER,
    "masked_ssim_range255": HIGHER,
    "masked_lpd_effnet_lite1": LOWER,
    "landmark_nme": LOWER,
    "fid": LOWER,
    "kid": LOWER,
    "lpips": LOWER,
    "lpips_vgg": LOWER,
    "masked_lpips": LOWER,
    "fd_lossnet_effnet_lite0": LOWER,
    "fd_vgg19": LOWER,
    # Portraits against the renderer's ground truth and true edits.
    **{f"appearance_de00_{region}": LOWER for region in PORTRAIT_REGIONS[1:]},
    **{f"edit_ssim_{e}": HIGHER for e, *_ in TRUE_EDITS},
    **{f"edit_nme_{e}": LOWER for e, *_ in TRUE_EDITS},
    **{f"edit_reached_{e}": HIGHER for e, *_ in TRUE_EDITS},
}


@pytest.mark.parametrize("name,better", sorted({**DEFAULT_PIPELINE, **OTHER_CONFIGURATIONS}.items()))
def test_direction_of_every_score_written(name: str, better: str) -> None:
    assert direction(name) == better
    assert lower_is_better(name) is (better == LOWER)
    assert arrow(name) == ("↓" if better == LOWER else "↑")


@pytest.mark.parametrize(
    "name",
    ["ssim_ci95_low", "flow_epe_s8_ci95_high", "masked_ssim_ci95_low", "kid_effnet_lite1_std", "kid_std"],
)
def test_a_statistic_of_a_score_has_no_direction(name: str) -> None:
    # kid_<backbone> would match kid_effnet_lite1_std as a backbone named "effnet_lite1_std".
    assert lookup(name).better is None and direction(name) is None and arrow(name) == ""
    with pytest.raises(UnknownMetric, match="neither lower nor higher"):
        lower_is_better(name)


@pytest.mark.parametrize(
    "name", ["accuracy", "ssim_std", "fid_std", "flow_epe_sx", "SSIM", "lpd_", "edit_ssim_", "edit_reached_2"]
)
def test_an_unknown_name_is_an_error_not_a_guess(name: str) -> None:
    with pytest.raises(UnknownMetric, match="lower is better"):
        lower_is_better(name)
    assert direction(name) is None and arrow(name) == ""


def test_every_entry_says_what_it_is_and_its_unit() -> None:
    specs = metric_table.METRICS + tuple(metric_table.STATISTICS.values())
    assert all(s.meaning and s.unit for s in specs)
    assert len({s.pattern for s in specs}) == len(specs)
    assert lookup("masked_ssim").pattern == "masked_ssim" and "body mask" in lookup("masked_ssim").meaning


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, stride=2)
        self.b = torch.nn.Conv2d(4, 6, 3, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.a(x)
        return [f1, self.b(f1)]


def test_metric_names_never_claim_fid_or_lpips_for_other_networks() -> None:
    net = ModuleFeatures(_TinyNet(), "effnet_lite0", "0" * 64)
    names = metric_names(net, net)
    assert (names.fd, names.kid, names.lpd, names.masked_lpd) == (
        "fd_effnet_lite0",
        "kid_effnet_lite0",
        "lpd_effnet_lite0",
        "masked_lpd_effnet_lite0",
    )
    # Even a backbone someone calls "inception" is not the FID network unless loaded as one.
    liar = ModuleFeatures(_TinyNet(), "inception", "0" * 64)
    assert metric_names(liar, liar).fd == "fd_inception"


def test_the_field_networks_names() -> None:
    # The reference networks by type alone (no weight files needed to tell which name they earn).
    inception, alex, vgg = (object.__new__(cls) for cls in (InceptionFID, LpipsAlex, LpipsVGG))
    assert (metric_names(inception, alex).fd, metric_names(inception, alex).kid) == ("fid", "kid")
    assert metric_names(inception, alex).lpd == "lpips"  # the published tables' AlexNet net-lin
    assert metric_names(inception, vgg).lpd == "lpips_vgg"
    assert metric_names(inception, vgg).masked_lpd == "masked_lpips_vgg"
    for name in (
        *metric_names(inception, vgg).__dict__.values(),
        *metric_names(inception, alex).__dict__.values(),
    ):
        assert direction(name) == LOWER
