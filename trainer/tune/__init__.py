"""``dropnet tune``: a hyper-parameter search (Optuna) over retain probabilities, max-norm and the schedule.

:mod:`.space` (what is searched), :mod:`.study` (the resumable study; every trial a run directory),
:mod:`.outputs` (tune.json, best.yaml, plots), :mod:`.plots`, :mod:`.cli_tune` (the command).
"""
