{#
    Use a model's custom schema as is: `staging` and `marts`, not dbt's default `main_staging`.
    Readers (notebooks, the query API, Metabase) then query marts.fct_daily_sales everywhere.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
