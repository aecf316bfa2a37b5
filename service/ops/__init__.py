"""Operations around the served model: drift monitoring and autoscaling."""
