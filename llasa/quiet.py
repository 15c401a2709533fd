"""Notices of the libraries underneath that a user of these scripts can do nothing about, filtered where they arise,
each as narrowly as its message allows. Notices a user can act on are left alone."""

import logging
import warnings

# torchao (pulled in by peft's LoRA and the xcodec2 package, imported by transformers with any model) logs at import
# that its C++ kernels were built for another torch. They serve its low-bit quantization, which nothing here uses, and
# no torchao release that peft accepts (>= 0.16) is built for torch 2.9.
TORCHAO_KERNELS_NOTICE = "Skipping import of cpp extensions due to incompatible torch version"

# transformers 5 renamed gradient_checkpointing to activation_checkpointing and warns on the old name, which TRL's
# GRPOConfig sets by default (so every run warns, whatever the user passed) and reads at every generation step
# (`is_gradient_checkpointing`, once per step). Both names still work; TRL is the one to move.
GRADIENT_CHECKPOINTING_RENAMES = (
    r"`gradient_checkpointing` is deprecated and will be removed in v6",
    r"`is_gradient_checkpointing` is deprecated and will be removed in v6",
)


def _not_torchao_kernels_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(TORCHAO_KERNELS_NOTICE)


def silence_unactionable_notices() -> None:
    """Install the filters (idempotent): before torchao or transformers is imported, so that import-time notices
    are caught too."""
    torchao_logger = logging.getLogger("torchao")
    if _not_torchao_kernels_notice not in torchao_logger.filters:
        torchao_logger.addFilter(_not_torchao_kernels_notice)
    for message in GRADIENT_CHECKPOINTING_RENAMES:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning, module=r"transformers\.")
