"""Object and claim hallucination; the claim-support threshold checked on hand-labelled claims.

CALIBRATION chose `DEFAULT_CLAIM_THRESHOLD` (best accuracy over 0.20..0.90). HELD_OUT was written
afterwards, without looking at its scores, and is only measured at the fixed threshold. Both are
paraphrases of KB entries (supported), claims true of another tool, and unrelated or absurd claims
(unsupported).
"""

import numpy as np
import pytest

from safetyvlm.eval.hallucination import (
    DEFAULT_CLAIM_THRESHOLD,
    ClaimChecker,
    calibrate_threshold,
    claim_hallucination,
    load_embedder,
    object_hallucination,
    reference_texts,
    threshold_accuracy,
)
from safetyvlm.kb import load_kb

CAL_SUPPORTED = [
    ("Hammer", "eye protection such as safety goggles"),
    ("Hammer", "hitting your own fingers or thumb"),
    ("Hammer", "the hammer head can come loose and fly off"),
    ("Hammer", "nails or chips flying when struck"),
    ("Hammer", "using the handle to pry things"),
    ("Hammer", "hitting two hammers together"),
    ("Drill", "ear protection during long drilling jobs"),
    ("Drill", "drill kicking back when the bit jams"),
    ("Drill", "hair or sleeves caught by the rotating chuck"),
    ("Drill", "forgetting to remove the chuck key"),
    ("Drill", "holding a small part in your hand while drilling it"),
    ("Drill", "respirator or dust mask for masonry dust"),
    ("Utility knife", "cut resistant gloves"),
    ("Utility knife", "serious cuts to the hand or leg"),
    ("Utility knife", "cutting towards yourself"),
    ("Utility knife", "blade breaking when bent sideways"),
    ("Utility knife", "using the knife blade to open paint cans"),
    ("Screwdriver", "the screwdriver slips and stabs your hand"),
    ("Screwdriver", "using a screwdriver as a chisel"),
    ("Screwdriver", "electric shock from touching live wires"),
    ("Screwdriver", "hammering on the screwdriver handle"),
    ("Tape measure", "the tape snapping back when it retracts"),
    ("Tape measure", "sharp edges of the steel tape can cut"),
    ("Tape measure", "letting the tape zip back uncontrolled"),
    ("Gun", "burns from the hot glue or nozzle"),
    ("Gun", "aiming the nail gun at a coworker"),
    ("Gun", "heat resistant gloves"),
    ("Gun", "disabling the safety contact tip of a nailer"),
    ("Handsaw", "falling cut pieces landing on your feet"),
    ("Handsaw", "the saw jumping out of the cut"),
    ("Handsaw", "sawing through nails hidden in the wood"),
    ("Wrench", "stacking one wrench on another for more torque"),
    ("Wrench", "wrench slipping off the nut"),
    ("Wrench", "steel-toe safety shoes"),
    ("Gas wrench", "pipe wrench slipping off the pipe"),
    ("Gas wrench", "using a cheater bar on the handle"),
    ("Cutting pliers", "wire ends flying off when cut"),
    ("Cutting pliers", "cutting wire that is too hard for the cutters"),
    ("Calipers", "measuring a part while the lathe is still spinning"),
    ("Calipers", "sharp jaw points can puncture skin"),
    ("Needle-nose pliers", "the thin tips break under heavy force"),
    ("Ratchet", "pawl slips under load and knuckles hit parts"),
    ("Ratchet", "putting a pipe over the ratchet handle for leverage"),
    ("Backsaw", "the blade jumps when you start the cut"),
    ("Pliers", "using pliers on nuts instead of a wrench"),
    ("Adjustable spanner", "using the adjustable wrench as a hammer"),
    ("Hand", "fingers crushed in pinch points"),
]
CAL_UNSUPPORTED = [
    # wrong tool: true of another tool, not of this one
    ("Tape measure", "kickback when the bit binds"),
    ("Tape measure", "hearing protection for prolonged drilling"),
    ("Hammer", "burns from molten glue"),
    ("Hammer", "dust mask when drilling masonry"),
    ("Calipers", "nails penetrating hands or bystanders"),
    ("Screwdriver", "falling offcuts striking feet"),
    ("Drill", "blade whipping back during retraction"),
    ("Drill", "using a heat gun to dry hair"),
    ("Utility knife", "loose head flying off the handle"),
    ("Utility knife", "stacking two wrenches for extra leverage"),
    ("Wrench", "deep lacerations to hands and thighs"),
    ("Wrench", "fumes from overheated plastics"),
    ("Gun", "measuring a part while it is still rotating"),
    ("Gun", "sawdust thrown into the eyes"),
    ("Handsaw", "electric shock from damaged cords"),
    ("Handsaw", "leaving the chuck key in the chuck"),
    ("Pliers", "blade jumping out of the kerf"),
    ("Ratchet", "burns from hot nozzles"),
    ("Tape measure", "striking hardened steel with the face"),
    ("Backsaw", "pointing the nozzle at people"),
    ("Calipers", "hearing protection for nail guns"),
    ("Needle-nose pliers", "cutting toward your body with the blade"),
    ("Hammer", "hair caught in the spinning chuck"),
    ("Screwdriver", "molten adhesive dripping on skin"),
    # unrelated or wrong
    ("Hammer", "radiation exposure from the handle"),
    ("Drill", "drowning hazard"),
    ("Utility knife", "lead poisoning from the blade coating"),
    ("Screwdriver", "wear a life jacket"),
    ("Wrench", "sunburn from prolonged use"),
    ("Tape measure", "food allergies"),
    ("Pliers", "the pliers may explode if dropped"),
    ("Gun", "using it to stir soup"),
    ("Handsaw", "high-visibility vest for road traffic"),
    ("Calipers", "the calipers emit toxic gas"),
    ("Ratchet", "swallowing the ratchet"),
    ("Hand", "the hand may overheat its battery"),
    ("Gas wrench", "wearing a lead apron for x-rays"),
    ("Cutting pliers", "allergic reaction to pollen"),
    ("Adjustable spanner", "wear a welding helmet"),
    ("Drill", "bee stings"),
]

HELD_SUPPORTED = [
    ("Adjustable spanner", "jaw slips off the bolt head"),
    ("Adjustable spanner", "safety glasses"),
    ("Backsaw", "cuts from the sharp teeth of the saw"),
    ("Backsaw", "trying to saw metal with a wood saw"),
    ("Calipers", "getting caught in rotating machinery while measuring"),
    ("Cutting pliers", "shock from cutting a live wire"),
    ("Cutting pliers", "using the cutters as a hammer"),
    ("Drill", "broken drill bits flying out"),
    ("Drill", "carrying the drill by the power cord"),
    ("Gas wrench", "crushed fingers between the jaw and the pipe"),
    ("Gas wrench", "using a pipe wrench on hex bolts"),
    ("Gun", "nail gun firing accidentally while carried"),
    ("Gun", "toxic fumes from overheating plastic"),
    ("Hammer", "wrist and elbow strain from repeated hammering"),
    ("Hammer", "using a hammer whose handle is cracked"),
    ("Hand", "hand placed in the path of the blade"),
    ("Handsaw", "leaving the saw teeth uncovered while carrying it"),
    ("Needle-nose pliers", "stab wounds from the pointed tips"),
    ("Needle-nose pliers", "using needle-nose pliers to turn nuts"),
    ("Pliers", "pinching skin between the handles"),
    ("Ratchet", "socket cracking on an impact gun"),
    ("Screwdriver", "using a screwdriver of the wrong size"),
    ("Tape measure", "using the tape as a guide for cutting"),
    ("Utility knife", "cutting with a blunt blade"),
    ("Wrench", "dropping a wrench from height onto people"),
]
HELD_UNSUPPORTED = [
    ("Adjustable spanner", "burns from the hot nozzle"),
    ("Backsaw", "electric shock from a frayed power cord"),
    ("Calipers", "kickback from the spinning bit"),
    ("Cutting pliers", "back strain from sawing"),
    ("Drill", "letting the tape retract uncontrolled"),
    ("Gas wrench", "cut-resistant sleeves for repetitive cutting"),
    ("Gun", "skinned knuckles when the spanner slips"),
    ("Hammer", "blade snapping under sideways force"),
    ("Hand", "battery fire while charging"),
    ("Handsaw", "measuring while the lathe spins"),
    ("Needle-nose pliers", "falling offcuts on your feet"),
    ("Pliers", "the glue gun overheating"),
    ("Ratchet", "deep cuts from the replaceable blade"),
    ("Screwdriver", "hearing loss from nail gun noise"),
    ("Tape measure", "hammer head flying off"),
    ("Utility knife", "gas leaking from damaged pipe fittings"),
    ("Wrench", "hair caught in the drill chuck"),
    ("Drill", "wear a snorkel"),
    ("Hammer", "frostbite from cold weather"),
    ("Calipers", "lion attacks in the workshop"),
    ("Gun", "paper cuts from the instruction manual"),
    ("Tape measure", "gluten intolerance"),
    ("Screwdriver", "the screwdriver can catch the flu"),
    ("Pliers", "wear a parachute"),
    ("Backsaw", "wireless signal interference"),
]


def _labelled(supported, unsupported):
    return [(n, c, True) for n, c in supported] + [(n, c, False) for n, c in unsupported]


CALIBRATION = _labelled(CAL_SUPPORTED, CAL_UNSUPPORTED)
HELD_OUT = _labelled(HELD_SUPPORTED, HELD_UNSUPPORTED)


@pytest.fixture(scope="module")
def checker(request):
    cache = request.config.cache.mkdir("safetyvlm-kb-embeddings")
    return ClaimChecker(load_kb(), load_embedder(), cache_dir=cache)


def _scores(checker, rows):
    out = []
    for name in sorted({n for n, _, _ in rows}):  # one encode call per tool
        idx = [k for k, (n, _, _) in enumerate(rows) if n == name]
        out += list(zip(idx, checker.scores(name, [rows[k][1] for k in idx])))
    return [float(s) for _, s in sorted(out)]


@pytest.mark.slow  # embeds every tool's KB texts on a cold cache (~25 s on 2 busy cores)
def test_threshold_separates_supported_from_unsupported_claims(checker, record_property):
    labels = [y for *_, y in CALIBRATION]
    cal = _scores(checker, CALIBRATION)
    best = calibrate_threshold(cal, labels)
    cal_acc = threshold_accuracy(cal, labels, DEFAULT_CLAIM_THRESHOLD)
    held_labels = [y for *_, y in HELD_OUT]
    held_acc = threshold_accuracy(_scores(checker, HELD_OUT), held_labels, DEFAULT_CLAIM_THRESHOLD)
    record_property("claim_threshold", DEFAULT_CLAIM_THRESHOLD)
    record_property("calibration_accuracy", cal_acc)
    record_property("held_out_accuracy", held_acc)
    print(f"claim threshold {DEFAULT_CLAIM_THRESHOLD}: calibration accuracy {cal_acc:.3f} "
          f"(n={len(labels)}, best {best['accuracy']:.3f} at {best['threshold']}), "
          f"held-out accuracy {held_acc:.3f} (n={len(held_labels)})")
    assert cal_acc >= best["accuracy"] - 0.02  # the default sits at (or next to) the best
    assert cal_acc >= 0.9
    assert held_acc >= 0.9


def test_reference_texts_are_the_tools_own(checker):
    kb = load_kb()
    texts = reference_texts(kb, "Hammer")
    assert "struck fingers and thumbs" in texts and len(texts) == len(set(texts))
    assert not any("chuck key" in t for t in texts)  # nothing from the Drill entry
    assert len(reference_texts(kb, "Hammer", include_corpus=False)) < len(texts)
    assert checker.claim_supported("Hammer", "hitting your thumb with the hammer")
    assert not checker.claim_supported("Hammer", "kickback when the drill bit binds")


def test_claim_hallucination_counts_unsupported_items(checker):
    preds = [[{"name": "Hammer", "bbox_2d": [0, 0, 5, 5],
               "required_ppe": ["safety glasses"],
               "primary_hazards": ["struck fingers and thumbs", "molten glue burns"],
               "common_misuses": []}],
             []]
    r = claim_hallucination(preds, checker)
    assert (r["claims"], r["unsupported"]) == (3, 1)
    assert r["rate"] == pytest.approx(1 / 3)
    assert r["per_field"]["required_ppe"] == 0.0 and r["per_field"]["primary_hazards"] == pytest.approx(0.5)
    assert r["per_field"]["common_misuses"] is None  # no misuse was claimed: no rate, not 0%
    assert r["examples"][0]["claim"] == "molten glue burns"
    assert claim_hallucination([[]], checker)["rate"] is None


def test_object_hallucination_is_by_class_present_in_the_image():
    truths = [[{"name": "Hammer"}, {"name": "Drill"}], [{"name": "Wrench"}], []]
    preds = [[{"name": "Hammer"}, {"name": "Hammer"}, {"name": "Gun"}],  # 2nd Hammer: class present
             [{"name": "Pliers"}],
             [{"name": "Drill"}]]
    r = object_hallucination(preds, truths)
    assert (r["hallucinated"], r["predicted"]) == (3, 5)
    assert r["rate"] == pytest.approx(3 / 5)
    assert r["per_class"] == {"Drill": 1, "Gun": 1, "Pliers": 1}
    assert object_hallucination([[]], [[{"name": "Hammer"}]])["rate"] is None


class CountingEmbedder:
    def __init__(self, inner):
        self.inner, self.texts = inner, 0

    def encode(self, texts, **kw):
        self.texts += len(texts)
        return self.inner.encode(texts, **kw)


def test_kb_embeddings_are_cached_on_disk(tmp_path):
    counting = CountingEmbedder(load_embedder())
    first = ClaimChecker(load_kb(), counting, cache_dir=tmp_path)
    texts, matrix = first.references("Tape measure")
    assert counting.texts == len(texts) and matrix.shape == (len(texts), 384)
    assert len(list(tmp_path.glob("kb-*.npy"))) == 1
    counting.texts = 0
    second = ClaimChecker(load_kb(), counting, cache_dir=tmp_path)
    _, again = second.references("Tape measure")
    assert counting.texts == 0 and np.array_equal(again, matrix)
    second.scores("Tape measure", ["blade whipping back", "blade whipping back"])
    assert counting.texts == 1  # only the (deduplicated) claim was embedded


def test_calibrate_threshold_on_known_scores():
    r = calibrate_threshold([0.9, 0.8, 0.3, 0.2], [True, True, False, False], [0.1, 0.5, 0.85])
    assert (r["threshold"], r["accuracy"]) == (0.5, 1.0)
    assert r["by_threshold"] == {0.1: 0.5, 0.5: 1.0, 0.85: 0.75}
