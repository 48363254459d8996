from fleetmine import main

main()
