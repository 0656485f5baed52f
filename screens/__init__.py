"""The Textual dashboard (`caat` with no arguments). It never imports torch.

`app` owns the workbench (`caat_app.runs.service`) and hands it to the screens (`runs`,
`monitor`, `launch`, `evals`, `compare`, `front`), which push each other and never import
`app`. Dialogs live in `modals` and `eval_form`; `calls` runs service calls off the UI
thread; `keys` turns each screen's bindings into its help and palette entries;
`caat_storage.firstpage` reads the home page before the store has loaded.
"""
