from refacex.cli import main

main()
