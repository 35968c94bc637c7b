"""Trainer integrations, each in its own module and imported only when used.

* :mod:`tsallis.integrations.trl` — ``TsallisGRPOConfig`` / ``TsallisGRPOTrainer`` for TRL
  (extra ``trl``);
* :mod:`tsallis.integrations.verl` — advantage estimators for verl, registered through the
  ``verl.plugins`` entry point (extra ``verl``).

This package imports neither TRL nor verl itself.
"""
