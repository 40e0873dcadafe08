from modelcanary.cli import main

main()
