"""The report stage (`build`): one self-contained HTML page of the whole study, from its sections (`sections`) in
plain HTML (`html`), the runs' config differences and stage times (`runs`), and Grad-CAM explanations of the
champion's test images (`gradcam`, `explanations`). The top layer: may import every other subpackage but `team`."""
