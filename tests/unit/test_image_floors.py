"""The image guard's floors (a statistic's lower bound: a blur far past training is not
recognised whatever the nearest-neighbour score says): the runtime's reading of the rule
(Guards.image_out_of_range, used by the TTA path)."""

from __future__ import annotations

from edge_infer.metadata import IMAGE_FLOORS, Guards

STATS = ["a", "sharp", "c"]


def guards(floors: dict | None) -> Guards:
    image = {"stats": STATS, "threshold": 3.0}
    if floors is not None:
        image[IMAGE_FLOORS] = floors
    return Guards(feature_threshold=1.0, image_stats=image)


def test_the_rule_is_the_score_or_a_floor() -> None:
    g = guards({"sharp": 2.9})
    assert g.image_floors() == {1: 2.9}
    assert not g.image_out_of_range(1.0, [0, 3.0, 0])
    assert g.image_out_of_range(3.5, [0, 3.0, 0])  # the score over its threshold
    assert g.image_out_of_range(1.0, [0, 2.8, 0])  # under the floor, whatever the score
    # a model without floors (3.0 and before): the score alone
    assert not guards(None).image_out_of_range(1.0, [0, -5.0, 0])
