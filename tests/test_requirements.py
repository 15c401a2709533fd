"""The pinned installs: the vLLM extra stays within the range TRL supports and keeps torch and torchaudio matched."""

import inspect
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, Version]:
    """name -> version of every `name==version` line (comments and blank lines skipped)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            [specifier] = requirement.specifier
            assert specifier.operator == "==", f"{path.name}: {line} is not pinned"
            found[requirement.name] = Version(specifier.version)
    return found


def trl_vllm_range() -> tuple[Version, Version]:
    """The vLLM versions TRL accepts, as trl.import_utils.is_vllm_available checks them."""
    from trl import import_utils

    source = inspect.getsource(import_utils.is_vllm_available)
    match = re.search(r'Version\("([\d.]+)"\) <= _vllm_base_version <= Version\("([\d.]+)"\)', source)
    assert match is not None, "trl.import_utils.is_vllm_available no longer states its range as expected"
    return Version(match.group(1)), Version(match.group(2))


def test_vllm_extra_is_within_trls_range_with_matched_torch():
    # vllm's pin lies in TRL's range; torch and torchaudio share major.minor (torchaudio's extension is built for
    # one torch); every line is an exact pin.
    extra = pins(REPO / "requirements-vllm.txt")
    low, high = trl_vllm_range()
    assert low <= Version(extra["vllm"].base_version) <= high
    assert extra["torch"].release[:2] == extra["torchaudio"].release[:2]


def test_runtime_torch_and_torchaudio_match():
    # The same rule for the base install (requirements.txt pins both).
    lines = [line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    versions = {
        Requirement(line).name: Version(next(iter(Requirement(line).specifier)).version)
        for line in lines
        if line.startswith(("torch==", "torchaudio=="))
    }
    assert versions["torch"].release[:2] == versions["torchaudio"].release[:2]


def test_trl_and_transformers_are_pinned_to_the_tested_range():
    # Both carry an upper bound (a new release must not install by itself), TRL's range is the one the trainer's
    # start-up check names, and the installed versions lie in them.
    import transformers
    import trl

    from llasa.trainer import SUPPORTED_TRL

    lines = [line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    requirements = {Requirement(line).name: Requirement(line) for line in lines if line}
    for name in ("trl", "transformers"):
        assert any(spec.operator == "<" for spec in requirements[name].specifier), f"{name} has no upper bound"
    assert requirements["trl"].specifier == SpecifierSet(SUPPORTED_TRL)
    assert Version(trl.__version__) in requirements["trl"].specifier
    assert Version(transformers.__version__) in requirements["transformers"].specifier
