"""What people read: collection insights, results tables gathered from runs, plots and
contact sheets, shared by the report job, the demo and the workbench."""
