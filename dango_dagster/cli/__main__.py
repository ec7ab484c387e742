from dango_dagster.cli import console_main

console_main()
