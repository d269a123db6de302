"""DVC stage `audit`: near-duplicates (leakage across splits), likely label errors and outliers among the split's
images (cleanlab on frozen MobileNetV2 features, perceptual hashes), written to reports/audit.json and
metrics/audit.json (conf/audit.yaml). It changes no data: params.yaml's data.exclude does, in the split."""

import hydra
from omegaconf import DictConfig

from catdog.audit.settings import check
from catdog.settings.checks import validate
from catdog.settings.hydra_app import hydra_entry


@hydra.main(config_path="../conf", config_name="audit", version_base="1.3")
@hydra_entry
def main(cfg: DictConfig) -> None:
    validate(cfg)  # before TensorFlow is imported
    check(cfg.audit)
    from catdog.audit.findings import METRICS, REPORT
    from catdog.audit.stage import audit

    metrics = audit(cfg)
    found = ", ".join(f"{metrics[k]} {k}" for k in ("label", "outlier", "near_duplicate", "same_photo", "leakage"))
    print(f"audit of {metrics['images']} images written to {REPORT} and {METRICS}: {found}")


if __name__ == "__main__":
    main()
