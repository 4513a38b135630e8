"""worksession: real-time work sessions between a seeker and a provider."""

__version__ = "0.1.0"
