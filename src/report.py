"""DVC stage `report`: the whole study as one self-contained HTML page (reports/study.html), logged to the compare run."""

import hydra
from omegaconf import DictConfig, OmegaConf

from catdog.settings.checks import validate
from catdog.settings.hydra_app import hydra_entry

REPORT = "reports/study.html"


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@hydra_entry
def main(cfg: DictConfig) -> None:
    validate(cfg)  # before TensorFlow is imported
    from catdog.report.build import ReportInputMissing, write_report
    from catdog.report.runs import RunNotFound

    dest = OmegaConf.select(cfg, "report.html", default=REPORT)  # `+report.html=/tmp/study.html` to look first
    try:
        written = write_report(cfg, dest)
    except RunNotFound as exc:  # a run the report reads is not in the store: a missing input too
        raise ReportInputMissing(str(exc)) from exc
    shown = f"{written.misclassified_shown} of {written.wrong_total}"
    print(
        f"report written to {written.path} ({shown} misclassified test images with Grad-CAM); "
        f"logged to the compare run {written.compare_run_id} as {written.path.name}"
    )


if __name__ == "__main__":
    main()
