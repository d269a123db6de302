"""DVC stage `report`: the whole study as one self-contained HTML page (reports/study.html), built from the study's
files and logged to the compare run where the current tracking store holds it."""

import hydra
from omegaconf import DictConfig, OmegaConf

from catdog.settings.checks import validate
from catdog.settings.hydra_app import hydra_entry

REPORT = "reports/study.html"


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@hydra_entry
def main(cfg: DictConfig) -> None:
    validate(cfg)  # before TensorFlow is imported
    from catdog.report.build import write_report

    dest = OmegaConf.select(cfg, "report.html", default=REPORT)  # `+report.html=/tmp/study.html` to look first
    written = write_report(cfg, dest)
    shown = f"{written.misclassified_shown} of {written.wrong_total}"
    logged = (
        f"logged to the compare run {written.compare_run_id} as {written.path.name}"
        if written.logged
        else f"not logged: the compare run {written.compare_run_id} is not in this tracking store"
    )
    print(f"report written to {written.path} ({shown} misclassified test images with Grad-CAM); {logged}")


if __name__ == "__main__":
    main()
