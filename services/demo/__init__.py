"""The demo job, shaped like the seed's report, hosted by the Limbo worker like any app.

`WORKER_APP=services.demo.job` (the default) is the example of a hosted module: it declares
its workflows and its queue in `limbo_setup`, adds its own routes, and keeps its own tables
(`limbo_demo.step_effects`, `limbo_demo.chaos_crashes`) in its own migration.
"""
