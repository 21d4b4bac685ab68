from avmon.cli import main

main()
