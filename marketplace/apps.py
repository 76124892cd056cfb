from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        from marketplace import health as market_health
        from marketplace import metrics as market_metrics
        from observability import health, metrics

        health.check_register("chain", market_health.check_chain)
        health.check_register("hosts", market_health.check_hosts)
        health.check_register("discovery", market_health.check_discovery)
        health.summary_register(market_metrics.success_summary)
        metrics.registry.register(market_metrics.JobsCollector())
        metrics.before_scrape_register(market_metrics.hosts_gauge_refresh)
