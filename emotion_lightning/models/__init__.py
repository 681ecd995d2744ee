"""The LightningModule, feature front-ends, networks, pretrained encoders, classical baselines, ensembles."""
