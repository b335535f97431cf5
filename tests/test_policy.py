from datetime import datetime, timezone

from bot.watch.policy import ModelFacts, decide_alert

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
T1 = datetime(2024, 6, 1, tzinfo=timezone.utc)
BASE = ModelFacts("openbmb/MiniCPM", author="openbmb", created_at=T0, license="llama3")


def test_undeclared_copy_alerts_high():
    suspect = ModelFacts("someone/Llama3-V", author="someone", created_at=T1, license="apache-2.0")
    d = decide_alert(suspect, BASE, "weights-derived", 0.99)
    assert d.alert and d.severity == "high" and not d.declared
    assert "undeclared weights-derived from openbmb/MiniCPM" in d.reason
    assert d.license_conflict == "derived from a llama3-licensed model but the card claims apache-2.0"


def test_declared_derivative_is_recorded_not_alerted():
    suspect = ModelFacts("lab/finetune", author="lab", created_at=T1, declared_base_models=("OpenBMB/MiniCPM",))
    d = decide_alert(suspect, BASE, "weights-derived", 0.99)
    assert not d.alert and d.declared
    assert decide_alert(suspect, BASE, "weights-derived", 0.99, alert_on_declared=True).alert


def test_declared_through_an_intermediate_ancestor():
    suspect = ModelFacts("lab/ft-of-ft", author="lab", created_at=T1, declared_base_models=("lab/ft",))
    d = decide_alert(suspect, BASE, "weights-derived", 0.99, declared_ancestors=frozenset({"openbmb/MiniCPM"}))
    assert not d.alert and d.declared


def test_same_architecture_never_alerts():
    suspect = ModelFacts("01-ai/Yi", author="01-ai", created_at=T1)
    assert not decide_alert(suspect, BASE, "same-architecture", 0.99).alert


def test_earlier_model_is_the_original():
    suspect = ModelFacts("old/model", author="old", created_at=T0)
    newer = ModelFacts("new/model", author="new", created_at=T1)
    d = decide_alert(suspect, newer, "identical", 0.999)
    assert not d.alert and "likely original" in d.reason


def test_tokenizer_copy_is_low_severity_and_same_owner_is_quiet():
    suspect = ModelFacts("x/y", author="x", created_at=T1)
    assert decide_alert(suspect, BASE, "tokenizer-copied", 0.9).severity == "low"
    own = ModelFacts("openbmb/MiniCPM-copy", author="openbmb", created_at=T1)
    assert not decide_alert(own, BASE, "identical", 0.999).alert
