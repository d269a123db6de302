"""A team's servers on one machine, for trying the team setup: PostgreSQL (`postgres`), an S3 API server
(`swift`), MLflow with basic auth over both (`server`), what they share (`loopback`) and their command line
(`cli`). Beside the study's layers: imports only `catdog.common`."""
