from runassist.cli import main

main()
