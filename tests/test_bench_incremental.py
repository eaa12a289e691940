"""bench.incremental's report: the data-step ratios in step seconds and in CPU seconds."""

from __future__ import annotations

from typing import Any

from bench import incremental


def _run(steps: dict[str, float], cpu: dict[str, float] | None) -> dict[str, Any]:
    run: dict[str, Any] = {"wall_s": sum(steps.values()) + 5, "materialize_s": sum(steps.values()),
                           "steps": steps, "cpu_s": 1.0, "loadavg_end": (1.0, 2.0, 3.0)}  # fmt: skip
    if cpu is not None:
        run["steps_cpu_s"] = cpu
    return run


def test_cpu_ratios_leave_out_the_heads_and_show_in_the_table() -> None:
    runs = {
        "first": _run({"note_embeddings": 80, "cohort": 20, "moe_mortality": 50},
                      {"note_embeddings": 150, "cohort": 50, "moe_mortality": 90}),
        "unchanged": _run({"note_embeddings": 1, "cohort": 1, "moe_mortality": 0},
                          {"note_embeddings": 2, "cohort": 2, "moe_mortality": 0}),
        "new_1pct": _run({"note_embeddings": 4, "cohort": 1, "moe_mortality": 40},
                         {"note_embeddings": 8, "cohort": 2, "moe_mortality": 80}),
    }  # fmt: skip
    ratios = incremental.cpu_ratios(runs)
    assert ratios == {"rerun_ratio_data_steps_cpu": 4 / 200, "new_data_ratio_data_steps_cpu": 10 / 200}
    res = {"stays": 10, "groups": "all", "runs": runs, "rerun_ratio_data_steps": 0.02,
           "new_data_ratio_data_steps": 0.05,
           "added": {"new_notes": 1, "notes_before": 100, "new_images": 1, "images_before": 90}}  # fmt: skip
    md = incremental.markdown(res)
    assert "1% new data 0.050 of the first run (200 CPU s)" in md
    assert "| note_embeddings | 80.00 | 1.00 | 4.00 | 150.00 | 2.00 | 8.00 |" in md
    assert "1.00/2.00/3.00" in md


def test_runs_without_cpu_seconds_keep_the_old_table() -> None:
    runs = {n: _run({"cohort": 2.0}, None) for n in ("first", "unchanged", "new_1pct")}
    assert incremental.cpu_ratios(runs) == {
        "rerun_ratio_data_steps_cpu": None,
        "new_data_ratio_data_steps_cpu": None,
    }
    res = {"stays": 10, "groups": "all", "runs": runs,
           "added": {"new_notes": 1, "notes_before": 100, "new_images": 1, "images_before": 90}}  # fmt: skip
    assert "| cohort | 2.00 | 2.00 | 2.00 |" in incremental.markdown(res)


def test_cpu_sampler_reads_a_steps_cpu_seconds_between_its_times() -> None:
    """`at(ts)` is the last sample at or before `ts`; a real busy step shows up between its
    times. (Process-wide CPU also counts other threads of the test process, so an idle
    window is checked on planted samples, not on the clock: it failed in CI under load.)"""
    import time

    from bench.pipeline_run import CpuSampler

    planted = CpuSampler()
    planted.samples = [(10.0, 1.0), (10.1, 1.0), (10.2, 1.3), (10.3, 1.6), (10.4, 1.6)]
    assert planted.at(9.0) == 1.0  # before the first sample: the first
    assert planted.at(10.15) == 1.0 and planted.at(10.2) == 1.3  # at or before
    assert abs(planted.at(10.35) - planted.at(10.1) - 0.6) < 1e-12  # the step's CPU
    assert planted.at(10.1) - planted.at(10.0) == 0.0  # idle before the step

    with CpuSampler(every=0.02) as sampler:
        time.sleep(0.05)
        start = time.time()
        t0 = time.process_time()
        while time.process_time() - t0 < 0.3:  # a busy step
            pass
        end = time.time()
        time.sleep(0.05)
    assert sampler.at(end) - sampler.at(start) >= 0.2
