"""Training (Lightning), inference and evaluation engines."""

import logging

# Lightning's advertisement for its cloud logger, printed by every Trainer
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)
