"""One source per setting (Dagster `Config` generated from the library's dataclasses) and
bounds on every numeric setting, refused by Dagster when the run is launched."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from typing import Annotated, Any, get_args, get_origin

import pytest
from dagster import AssetSpec, Config, DagsterInstance, DagsterInvalidConfigError, materialize
from pydantic import Field

import assets
from moe.config import ModelConfig, TrainConfig
from plumbing.dagster_config import About, config_from
from plumbing.resources import DuckDBSettings, ProjectResource
from sql.build import CohortParams


def _defaults(source: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(source):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def test_the_cohort_config_is_the_library_dataclass():
    from assets.cohort import CohortConfig

    assert CohortConfig().model_dump() == dataclasses.asdict(CohortParams())
    assert CohortConfig(observation_window_hours=24).to(CohortParams) == CohortParams(24.0)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("observation_window_hours", 0.0, "> 0"),
        ("observation_window_hours", -5.0, "> 0"),
        ("observation_window_hours", float("nan"), "> 0"),
        ("long_stay_days", 0, "> 0"),
        ("readmission_days", -1.0, "> 0"),
        ("ehr_lookback_hours", -0.5, ">= 0 and <= 168"),
        ("ehr_lookback_hours", 169.0, ">= 0 and <= 168"),
        ("ehr_lookback_hours", "6", ">= 0 and <= 168"),
    ],
)
def test_cohort_params_refuse_a_value_out_of_bounds_without_dagster(field, value, allowed):
    """The library dataclass checks itself (a notebook's `build_cohort` too), with the
    bounds the launchpad uses: the error names the field, the value and the range."""
    with pytest.raises(ValueError) as err:
        CohortParams(**{field: value})
    assert str(err.value).startswith(f"CohortParams.{field} = {value!r} is out of range")
    assert f"must be a number {allowed}" in str(err.value)


def test_cohort_params_accept_their_bounds_and_share_them_with_the_launchpad():
    from assets.cohort import CohortConfig
    from sql.build import COHORT_ABOUT

    CohortParams(observation_window_hours=0.5, ehr_lookback_hours=0, readmission_days=1e-3)
    CohortParams(ehr_lookback_hours=168)
    for name, about in COHORT_ABOUT.items():
        field = CohortConfig.model_fields[name]
        assert field.description == about.description
        assert {k: getattr(m, k) for m in field.metadata for k in about.bounds() if hasattr(m, k)} == (
            about.bounds()
        )


def _launchpad_and_library() -> list[tuple[type, type, dict[str, About]]]:
    """(generated Config, its library dataclass, the About table beside the dataclass)."""
    from assets.embeddings import CxrEmbeddingsConfig, NoteEmbeddingsConfig
    from assets.staging import StagingConfig
    from moe.embed_config import CXR_ABOUT, NOTE_ABOUT, CxrEmbeddingSettings, NoteEmbeddingSettings
    from sql.build import STAGING_ABOUT, StagingParams

    return [
        (StagingConfig, StagingParams, STAGING_ABOUT),
        (NoteEmbeddingsConfig, NoteEmbeddingSettings, NOTE_ABOUT),
        (CxrEmbeddingsConfig, CxrEmbeddingSettings, CXR_ABOUT),
    ]


def test_the_staging_and_embedding_configs_are_the_library_dataclasses():
    for config, source, about in _launchpad_and_library():
        assert config().model_dump() == dataclasses.asdict(source()), config.__name__
        assert config().to(source) == source()
        for name, a in about.items():  # each description and bound comes from the library
            info = config.model_fields[name]
            assert info.description == a.description
            assert {k: getattr(m, k) for m in info.metadata for k in a.bounds() if hasattr(m, k)} == (
                a.bounds()
            )
    from assets.embeddings import NoteEmbeddingsConfig
    from moe.embed_config import NoteEmbeddingSettings

    assert NoteEmbeddingsConfig(batch_size=8).to(NoteEmbeddingSettings).batch_size == 8


def test_the_encoders_take_their_defaults_from_the_settings():
    """TextEncoder and CxrEncoder keep their keyword API; the defaults are the settings'."""
    from moe.cxr_encoder import CxrEncoder
    from moe.embed_config import CxrEmbeddingSettings, NoteEmbeddingSettings
    from moe.text_encoder import TextEncoder

    for encoder, settings in ((TextEncoder, NoteEmbeddingSettings()), (CxrEncoder, CxrEmbeddingSettings())):
        params = inspect.signature(encoder.__init__).parameters
        kwargs = settings.encoder_kwargs()
        assert kwargs and {k: params[k].default for k in kwargs} == kwargs, encoder.__name__


@pytest.mark.parametrize(
    ("source", "field", "value", "allowed"),
    [
        ("StagingParams", "max_rejected_fraction", 1.5, ">= 0 and <= 1"),
        ("StagingParams", "max_rejected_fraction", -0.01, ">= 0 and <= 1"),
        ("StagingParams", "max_rejected_fraction", float("nan"), ">= 0 and <= 1"),
        ("StagingParams", "max_rejected_fraction", "0.1", ">= 0 and <= 1"),
        ("NoteEmbeddingSettings", "batch_size", 0, ">= 1"),
        ("NoteEmbeddingSettings", "chunk_overlap", -1, ">= 0"),
        ("NoteEmbeddingSettings", "max_chunks_per_note", 100_001, ">= 1 and <= 100000"),
        ("NoteEmbeddingSettings", "recency_half_life_hours", 0.0, "> 0"),
        ("CxrEmbeddingSettings", "num_workers", -2, ">= -1"),
        ("CxrEmbeddingSettings", "seed", -1, ">= 0"),
        ("CxrEmbeddingSettings", "log_every", 0, ">= 1"),
    ],
)
def test_staging_and_embedding_settings_refuse_a_value_out_of_bounds_without_dagster(
    source, field, value, allowed
):
    """As CohortParams: the library dataclass checks itself (a notebook's `build_staged`,
    `NoteWork`, `ImageWork` too) with the launchpad's bounds; the error names the field, the
    value and the range."""
    cls = next(s for _, s, _ in _launchpad_and_library() if s.__name__ == source)
    with pytest.raises(ValueError) as err:
        cls(**{field: value})
    assert str(err.value).startswith(f"{source}.{field} = {value!r} is out of range")
    assert f"must be a number {allowed}" in str(err.value)
    cls(**{field: dataclasses.asdict(cls())[field]})  # the default is accepted


def test_the_model_config_is_the_library_dataclasses():
    from assets.models import FIT_FIELDS, BaselinesConfig, MoETrainConfig, moe_config

    library = {**_defaults(ModelConfig), **_defaults(TrainConfig)}
    del library["subsets"]  # modality tuples: set in Python, not in the launchpad
    assert set(MoETrainConfig.model_fields) == {*library, "n_boot", "force"}
    assert moe_config(MoETrainConfig()) == library and set(library) == FIT_FIELDS
    assert set(BaselinesConfig.model_fields) == {*MoETrainConfig.model_fields, "kinds", "ablations"}
    assert moe_config(BaselinesConfig()) == library


def test_a_generated_config_follows_its_dataclass_and_refuses_drift():
    @dataclasses.dataclass
    class Params:
        hours: float = 6.0
        names: tuple[str, ...] = ("a", "b")

    about = {"hours": About("h", gt=0), "names": About("n")}
    cfg = config_from("Cfg", "doc", [Params], about)
    assert cfg().model_dump() == {"hours": 6.0, "names": ["a", "b"]}
    assert cfg.model_fields["hours"].description == "h"
    with pytest.raises(TypeError, match="Params.names has no About"):
        config_from("Cfg", "doc", [Params], {"hours": About("h")})
    with pytest.raises(TypeError, match="fields no source has: \\['minutes'\\]"):
        config_from("Cfg", "doc", [Params], {**about, "minutes": About("m")})


def test_a_generated_config_runs_the_dataclass_checks_and_its_own():
    @dataclasses.dataclass
    class Params:
        low: int = 1
        high: int = 2

        def __post_init__(self) -> None:
            if self.high > 10:
                raise ValueError("high must be at most 10")

    def ordered(c: Any) -> str | None:
        return "low must be below high" if c.low >= c.high else None

    cfg = config_from("Cfg", "doc", [Params], {"low": About("l"), "high": About("h")}, check=ordered)
    cfg(low=1, high=9)
    with pytest.raises(ValueError, match="high must be at most 10"):
        cfg(high=11)
    with pytest.raises(ValueError, match="low must be below high"):
        cfg(low=5, high=5)


# --------------------------------------------------------------------------- bounds


def _config_classes() -> list[type[Config]]:
    found: dict[str, type[Config]] = {}
    for m in pkgutil.iter_modules(assets.__path__):
        module = importlib.import_module(f"assets.{m.name}")
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, Config) and obj.__module__ != "dagster":
                found[obj.__name__] = obj
    return list(found.values())


def _numeric(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return _numeric(get_args(annotation)[0])
    base = get_args(annotation)[0] if get_args(annotation) else annotation  # Annotated
    return base in (int, float)


def _bounded(info: Any) -> bool:
    """A bound on the field, or on each item of a list field (Annotated[float, Field(...)])."""
    metadata = list(info.metadata)
    for item in get_args(info.annotation):
        for m in getattr(item, "__metadata__", ()):
            metadata += [m, *getattr(m, "metadata", ())]
    return any(hasattr(m, b) for m in metadata for b in ("gt", "ge", "lt", "le"))


def test_every_numeric_setting_of_every_asset_config_has_bounds():
    classes = _config_classes()
    names = {c.__name__ for c in classes}
    assert {"CohortConfig", "StagingConfig", "RawConfig", "MoETrainConfig", "BaselinesConfig", "ReportConfig",
            "NoteEmbeddingsConfig", "CxrEmbeddingsConfig"} <= names  # fmt: skip
    unbounded = [
        f"{c.__name__}.{name}"
        for c in classes
        for name, info in c.model_fields.items()
        if _numeric(info.annotation) and not _bounded(info)
    ]
    assert unbounded == []


def test_the_bounds_check_sees_an_unbounded_field():
    class Loose(Config):
        n: int = Field(default=1)
        m: int = Field(default=1, ge=1)
        xs: list[float] = Field(default=[0.5])
        ys: list[Annotated[float, Field(le=1.0)]] = Field(default=[0.5])

    assert [_bounded(i) for i in Loose.model_fields.values()] == [False, True, False, True]


def test_every_asset_with_settings_has_them_checked_at_launch():
    from pipelines.definitions import defs

    configured = {}
    for a in defs.assets or []:
        if isinstance(a, AssetSpec) or not hasattr(a, "op"):
            continue
        config_type = a.op.config_schema.config_type
        if getattr(config_type, "fields", None):  # an asset without settings has Any
            configured[a.op.name] = config_type.description or ""
    assert {"mimic_raw", "cohort", "note_embeddings", "cxr_embeddings", "moe_mortality",
            "baselines_readmission", "moe_report"} <= set(configured)  # fmt: skip
    assert all(d.endswith("checked at launch") for d in configured.values()), configured


# --------------------------------------------------------------------------- refused at launch


def _cohort_assets() -> list[Any]:
    from assets.cohort import cohort
    from assets.staging import staging_assets

    return [AssetSpec("mimic_raw"), *staging_assets, cohort]


def _model_assets(name: str) -> list[Any]:
    from assets.models import BY_NAME

    return [BY_NAME[name]]


def _report_assets(name: str) -> list[Any]:
    from assets.report import moe_report

    return [moe_report]


BAD = [
    ("cohort", {"observation_window_hours": 0}, "observation_window_hours: Input should be greater than 0"),
    ("cohort", {"observation_window_hours": -5}, "observation_window_hours: Input should be greater than 0"),
    ("cohort", {"long_stay_days": 0}, "long_stay_days"),
    ("cohort", {"readmission_days": -1}, "readmission_days"),
    ("staged_patients", {"max_rejected_fraction": 1.5}, "max_rejected_fraction: Input should be less than or equal to 1"),
    ("moe_mortality", {"top_k": 0}, "top_k: Input should be greater than or equal to 1"),
    ("moe_mortality", {"top_k": 8}, "top_k (8) is more than the 7 routed experts"),
    ("moe_mortality", {"batch_size": 0}, "batch_size"),
    ("moe_mortality", {"modality_dropout": 1.5}, "modality_dropout"),
    ("moe_mortality", {"class_weight": "sometimes"}, "class_weight must be 'balanced' or 'none'"),
    ("baselines_long_los", {"lr": 0}, "lr: Input should be greater than 0"),
    ("moe_report", {"fractions": [0.5, 1.5]}, "fractions.1: Input should be less than or equal to 1"),
    ("moe_report", {"n_boot": 0}, "n_boot"),
]  # fmt: skip


@pytest.mark.parametrize(("asset", "config", "message"), BAD, ids=[f"{b[0]}-{b[1]}" for b in BAD])
def test_a_bad_setting_is_refused_before_any_step_runs(tmp_path, asset, config, message):
    selection = (
        _cohort_assets() if asset in ("cohort", "staged_patients")
        else _report_assets(asset) if asset == "moe_report"
        else _model_assets(asset)
    )  # fmt: skip
    instance = DagsterInstance.ephemeral()
    with pytest.raises(DagsterInvalidConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        materialize(
            selection,
            resources={
                "project": ProjectResource(data_dir=str(tmp_path / "data"), mimic_root=str(tmp_path)),
                "duckdb": DuckDBSettings(memory_limit="256MB", threads=1),
            },
            instance=instance,
            run_config={"ops": {asset: {"config": config}}},
        )
    assert instance.get_runs() == []  # no run was created, so no step ran
    assert not (tmp_path / "data").exists()
