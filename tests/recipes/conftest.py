from tests.launch.conftest import fake_data, fake_trainer  # noqa: F401  (the stand-in trainer and its data)
