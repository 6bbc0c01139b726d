"""Floor 4, what a paper-style study is: ``learning_curve`` (config -> runs -> report) and
``pipeline`` (staged YAML runs)."""
