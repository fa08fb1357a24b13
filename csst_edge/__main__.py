from csst_edge.cli.main import run

run()
