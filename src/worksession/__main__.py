from worksession.cli import main

main()
