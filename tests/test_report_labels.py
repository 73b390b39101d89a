"""A radiologist's report → the labels it affirms, negates or leaves uncertain (NegEx), the concordance with
the AI's answer, and how a report is told from laboratory results in HL7."""

from __future__ import annotations

import pytest

from node.ingest.hl7_inbound import interpret
from node.ingest.hl7v2 import parse
from node.routing import Router
from node.testing.synthetic_hl7 import LabValue, lab_message, report_message
from node.verdicts.concordance import Concordance, concordance
from node.verdicts.labels import LabelFinder
from node.verdicts.negex import Mention, sentences

CHEST = Router.from_file().rules.domains["chest_xray"]
FINDER = LabelFinder(CHEST.labels, CHEST.synonyms)
A, N, U = Mention.AFFIRMED, Mention.NEGATED, Mention.UNCERTAIN


@pytest.mark.parametrize(("text", "found"), [
    ("Right upper lobe pneumonia.", {"Pneumonia": A}),
    ("No pneumothorax. Normal heart size.", {"Pneumothorax": N}),
    ("Possible small effusion.", {"Pleural Effusion": U}),
    ("No evidence of focal consolidation, pneumothorax, or pleural effusion.",
     {"Consolidation": N, "Pleural Effusion": N, "Pneumothorax": N}),
    ("Pneumothorax is ruled out.", {"Pneumothorax": N}),  # post-negation
    ("A small pneumothorax cannot be excluded.", {"Pneumothorax": U}),  # post-uncertainty
    ("No pneumothorax, but a left pleural effusion.", {"Pleural Effusion": A, "Pneumothorax": N}),  # termination
    ("No change in the left pleural effusion.", {"Pleural Effusion": A}),  # pseudo-negation
    ("No acute cardiopulmonary process.", {"No Finding": A}),  # the trigger inside a name is the name's
    ("Enlarged heart.\nNo edema.", {"Cardiomegaly": A, "Edema": N}),
    ("No edema seen in the lungs today, with the cardiac silhouette stable and the lungs clear of pneumonia", {
        "Edema": N}),  # beyond the five-word window nothing is negated; "clear of" is no trigger
])
def test_labels_a_report_affirms_negates_or_leaves_uncertain(text: str, found: dict) -> None:
    """Each label is found by its name or a synonym, whole words, and judged by the triggers around it."""
    result = FINDER.find(text)
    assert {k: v for k, v in result.items() if k != "Pneumonia" or "Pneumonia" in found} == found


def test_the_window_and_sentences_bound_a_trigger() -> None:
    """A trigger governs five words and its own sentence only; a decimal point ends no sentence."""
    assert FINDER.find("No change. Pneumothorax.") == {"Pneumothorax": A}
    assert FINDER.find("No one two three four five six pneumothorax") == {"Pneumothorax": A}
    assert FINDER.find("No one two three four five pneumothorax") == {"Pneumothorax": N}
    assert sentences("Nodule of 3.5 cm. Effusion") == [["nodule", "of", "3.5", "cm"], ["effusion"]]


@pytest.mark.parametrize(("answered", "text", "verdict"), [
    (("Pneumonia",), "Right upper lobe pneumonia.", Concordance.AGREE),
    (("Pneumothorax",), "No pneumothorax. Normal heart size.", Concordance.DISAGREE),
    (("Pneumonia",), "Possible small effusion.", Concordance.UNKNOWN),
    (("Pneumonia", "Pleural Effusion"), "Pneumonia. No effusion.", Concordance.PARTIAL),
    (("Pneumonia",), "Pneumonia and a left pleural effusion.", Concordance.PARTIAL),
    (("Pneumothorax",), "Cardiomegaly.", Concordance.DISAGREE),
    (("Pneumothorax",), "Nothing of the kind.", Concordance.UNKNOWN),
    ((), "Pneumonia.", Concordance.DISAGREE),
])
def test_concordance_of_the_answer_with_the_report(answered: tuple, text: str, verdict: Concordance) -> None:
    """agree: the affirmed labels are the answer's; partial: overlap; disagree: the answer negated or another
    label affirmed; unknown: nothing decidable."""
    assert concordance(answered, FINDER.find(text)) == verdict


def test_the_shipped_rules_carry_the_words_reports_use() -> None:
    """The synonyms of the rules the node ships with (the one place they are kept) find a report's own words."""
    assert FINDER.find("Blunting of the costophrenic angle. Unremarkable chest otherwise.") == {
        "Pleural Effusion": A, "No Finding": A}


def test_synonyms_must_name_labels_of_the_task() -> None:
    """A synonym for a label the task does not have is refused with the labels it has."""
    with pytest.raises(ValueError, match="not among the task's labels"):
        type(CHEST).model_validate({**CHEST.model_dump(), "synonyms": {"Pneumonitis": ["x"]}})


@pytest.mark.parametrize("message_type", ["ORU^R01", "MDM^T02"])
def test_a_report_message_is_a_report_with_its_numbers(message_type: str) -> None:
    """ORU^R01 of report text and MDM^T02 give one report with its accession, placer and filler numbers;
    a correction says so."""
    message = report_message("R1", "P1", "ACC1", "Line one.\nLine two.", "C", message_type=message_type)
    [report] = interpret(parse(message), "HOSP", 0.0).reports
    assert (report.accession, report.placer, report.filler, report.status) == ("ACC1", "ACC1P", "ACC1F", "C")
    assert report.text == "Line one.\nLine two."
    assert report.key == "ACC1"


def test_laboratory_results_are_no_report() -> None:
    """A laboratory ORU^R01 (numeric OBX, no imaging section) stays lab results, a text comment beside its
    values or another section in OBR-24 notwithstanding; without OBR-24, text alone is a report."""
    lab = lab_message("L1", "P1", [LabValue("10839-9", "Troponin I", "0.9", "ng/mL")])
    inbound = interpret(parse(lab), "HOSP", 0.0)
    assert inbound.reports == () and len(inbound.results) == 1
    commented = interpret(parse(lab + "\rOBX|2|TX|8251-1^Comment^LN||Haemolysed sample||||||F"), "HOSP", 0.0)
    assert commented.reports == () and len(commented.results) == 2
    report = report_message("R1", "P1", "ACC1", "Pneumonia.")
    assert interpret(parse(report.replace("|RAD|", "|LAB|")), "HOSP", 0.0).reports == ()
    assert interpret(parse(report.replace("|RAD|", "||")), "HOSP", 0.0).reports != ()


def test_a_preliminary_report_is_kept_as_a_message_only() -> None:
    """Only final and corrected reports are judged."""
    message = report_message("R1", "P1", "ACC1", "Pneumonia.", "P")
    assert interpret(parse(message), "HOSP", 0.0).reports == ()
